package main

import (
	"context"
	"encoding/json"
	"maps"
	"reflect"
	"slices"
	"testing"

	"github.com/blue-banded-bee/taskq/crawl"
	"github.com/blue-banded-bee/taskq/internal/pgtest"
	"github.com/blue-banded-bee/taskq/tasks"
)

// River's recorded output is the task row's result: taskq finishes tasks
// with crawl.Simulator's results, and each result's output, as pageWorker
// records it, must hold what the row holds under the same names, and name
// every column a finish filled in, so that the two sides keep doing the same
// work when the result grows.
func TestRiverOutputIsTheTaskRow(t *testing.T) {
	ctx := context.Background()
	pool := pgtest.New(t)
	q := tasks.New(pool, tasks.Config{})
	job, err := q.CreateJob(ctx, tasks.JobOptions{Domain: "bench.example.com", Concurrency: 5000})
	if err != nil {
		t.Fatal(err)
	}
	pages := make([]tasks.Page, 500)
	for i := range pages {
		pages[i] = benchPage(i, len(pages))
	}
	if _, err := q.Enqueue(ctx, job.ID, pages); err != nil {
		t.Fatal(err)
	}
	var claimed []tasks.Task
	for len(claimed) < len(pages) { // a claim takes from one shard of the job
		batch, err := q.Claim(ctx, "w", len(pages))
		if err != nil || len(batch) == 0 {
			t.Fatalf("claimed %d of %d: %v", len(claimed), len(pages), err)
		}
		claimed = append(claimed, batch...)
	}
	rows := func() map[string]map[string]any {
		var all []map[string]any
		if err := pool.QueryRow(ctx, "SELECT jsonb_agg(to_jsonb(t)) FROM tasks t").Scan(&all); err != nil {
			t.Fatal(err)
		}
		byID := map[string]map[string]any{}
		for _, r := range all {
			byID[r["id"].(string)] = r
		}
		return byID
	}
	before := rows()
	outcomes := make([]tasks.Outcome, len(claimed))
	outputs := map[string]map[string]any{}
	for i, task := range claimed {
		res := crawl.Simulator{}.Result(task)
		outcomes[i] = tasks.Outcome{Task: task, Result: res}
		b, err := json.Marshal(newFetchOutput(res))
		if err != nil {
			t.Fatal(err)
		}
		var out map[string]any
		if err := json.Unmarshal(b, &out); err != nil {
			t.Fatal(err)
		}
		outputs[task.ID] = out
	}
	if rep, err := q.Finish(ctx, outcomes); err != nil || rep.Completed != len(outcomes) {
		t.Fatalf("Finish: %+v, %v", rep, err)
	}
	after := rows()

	filled := map[string]bool{} // columns a finish filled in
	recorded := map[string]bool{}
	for id, out := range outputs {
		row := after[id]
		for k, v := range out {
			recorded[k] = true
			if !reflect.DeepEqual(row[k], v) {
				t.Errorf("task %s: output %s = %v, row has %v", id, k, v, row[k])
			}
		}
		for k, v := range row {
			if v != nil && before[id][k] == nil && k != "completed_at" {
				filled[k] = true
			}
		}
	}
	for _, k := range slices.Sorted(maps.Keys(filled)) {
		if !recorded[k] {
			t.Errorf("column %s is filled in by a finish but not in River's output", k)
		}
	}
}
