// Command app is a program in a module of its own that uses taskq the way the
// crawling service does: its worker loop keeps its own queue interface and
// calls, satisfied by db.DbQueue, and a crawl can instead run on taskq's
// worker pool. It exists so that CI proves the application-facing API is
// importable from outside this repository's module; it is not a tool.
//
//	DATABASE_URL=postgres://... go run . [--pool] [--job ID]
package main

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"time"

	"github.com/blue-banded-bee/taskq/crawl"
	"github.com/blue-banded-bee/taskq/db"
	"github.com/blue-banded-bee/taskq/worker"
)

// TaskManager is the application's queue interface (its worker's
// internal/jobs/interfaces.go, with EnqueueURLs and CleanupStuckJobs), in the
// application's own package and words. The assignment below breaks this
// module's build if a signature in taskq drifts.
type TaskManager interface {
	GetNextTask(ctx context.Context, jobID string) (*db.Task, error)
	UpdateTaskStatus(ctx context.Context, task *db.Task) error
	Execute(ctx context.Context, fn func(*sql.Tx) error) error
	ExecuteMaintenance(ctx context.Context, fn func(*sql.Tx) error) error
	EnqueueURLs(ctx context.Context, jobID string, pages []db.Page, sourceType, sourceURL string) error
	CleanupStuckJobs(ctx context.Context) error
}

var _ TaskManager = (*db.DbQueue)(nil)

func main() {
	pool := flag.Bool("pool", false, "run on taskq's worker pool instead of the application's own loop")
	jobID := flag.String("job", "", "claim only this job's tasks (\"\" = any job)")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Getenv("DATABASE_URL"), *pool, *jobID); err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintln(os.Stderr, "app:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, url string, pool bool, jobID string) error {
	d, err := db.Open(ctx, url, db.Options{})
	if err != nil {
		return err
	}
	defer d.Close()
	if pool {
		fetcher := &crawl.Fetcher{Domains: crawl.NewDomainCache(d.Queue())}
		return worker.New(d.Queue(), fetcher, worker.Config{Workers: 8, Logger: slog.Default()}).Run(ctx)
	}
	return loop(ctx, db.NewDbQueue(d), d, jobID)
}

// loop is the shape of the application's worker: claim, fetch, write the
// status the task now has, and wait when there is nothing to do.
func loop(ctx context.Context, q TaskManager, d *db.DB, jobID string) error {
	client := &http.Client{Timeout: 30 * time.Second}
	for {
		task, err := q.GetNextTask(ctx, jobID)
		if err != nil {
			return err
		}
		if task == nil {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Second):
				continue
			}
		}
		if err := fetch(ctx, client, d, task); err != nil {
			task.Status, task.Error = db.TaskStatusPending, err.Error() // retried while the job allows
		} else {
			task.Status = db.TaskStatusCompleted
		}
		if err := q.UpdateTaskStatus(ctx, task); err != nil {
			return err
		}
	}
}

// fetch is a stand-in for the application's own fetcher: it fills the
// task's result fields from one GET of the page.
func fetch(ctx context.Context, client *http.Client, d *db.DB, task *db.Task) error {
	job, err := d.GetJob(ctx, task.JobID)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+job.Domain+task.Path, nil)
	if err != nil {
		return err
	}
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	task.StatusCode, task.ResponseTime = resp.StatusCode, time.Since(start).Milliseconds()
	task.CacheStatus, task.ContentType, task.ContentLength = resp.Header.Get("Cf-Cache-Status"), resp.Header.Get("Content-Type"), n
	return nil
}
