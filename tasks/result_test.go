package tasks_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/blue-banded-bee/taskq/tasks"
)

// fetchColumns are the result columns of a task's row, JSON decoded.
type fetchColumns struct {
	StatusCode    *int32
	ResponseTime  *int32
	CacheStatus   *string
	ContentType   *string
	ContentLength *int64
	Headers       http.Header
	RedirectURL   *string

	DNSLookupTime, TCPConnectionTime, TLSHandshakeTime, TTFB, ContentTransferTime *int32

	SecondResponseTime  *int64
	SecondCacheStatus   *string
	SecondContentLength *int64
	SecondHeaders       http.Header

	SecondDNSLookupTime, SecondTCPConnectionTime, SecondTLSHandshakeTime, SecondTTFB, SecondContentTransferTime *int32

	CacheCheckAttempts []tasks.CacheCheckAttempt
}

func fetchColumnsOf(t *testing.T, r taskRecord) fetchColumns {
	t.Helper()
	c := fetchColumns{
		StatusCode: r.StatusCode, ResponseTime: r.ResponseTime, CacheStatus: r.CacheStatus,
		ContentType: r.ContentType, ContentLength: r.ContentLength, RedirectURL: r.RedirectURL,
		DNSLookupTime: r.DNSLookupTime, TCPConnectionTime: r.TCPConnectionTime, TLSHandshakeTime: r.TLSHandshakeTime,
		TTFB: r.TTFB, ContentTransferTime: r.ContentTransferTime,
		SecondResponseTime: r.SecondResponseTime, SecondCacheStatus: r.SecondCacheStatus,
		SecondContentLength: r.SecondContentLength, SecondDNSLookupTime: r.SecondDNSLookupTime,
		SecondTCPConnectionTime: r.SecondTCPConnectionTime, SecondTLSHandshakeTime: r.SecondTLSHandshakeTime,
		SecondTTFB: r.SecondTTFB, SecondContentTransferTime: r.SecondContentTransferTime,
	}
	for _, j := range []struct {
		raw json.RawMessage
		to  any
	}{{r.Headers, &c.Headers}, {r.SecondHeaders, &c.SecondHeaders}, {r.CacheCheckAttempts, &c.CacheCheckAttempts}} {
		if j.raw == nil {
			continue
		}
		if err := json.Unmarshal(j.raw, j.to); err != nil {
			t.Fatalf("stored %s: %v", j.raw, err)
		}
	}
	return c
}

// warmedResult is a fetch that found the page not cached, checked the
// cache twice and confirmed it warm with a second request.
func warmedResult() tasks.TaskResult {
	return tasks.TaskResult{
		StatusCode:    200,
		ResponseTime:  412 * time.Millisecond,
		CacheStatus:   "MISS",
		ContentType:   "text/html; charset=utf-8",
		ContentLength: 48_213,
		Headers:       http.Header{"Cf-Cache-Status": {"MISS"}, "Content-Type": {"text/html; charset=utf-8"}},
		RedirectURL:   "https://www.example.com/p00000/",
		Timing: tasks.Timing{DNSLookup: 12 * time.Millisecond, TCPConnection: 21 * time.Millisecond,
			TLSHandshake: 43 * time.Millisecond, TTFB: 380 * time.Millisecond, ContentTransfer: 32 * time.Millisecond},
		Second: &tasks.SecondRequest{
			ResponseTime:  38 * time.Millisecond,
			CacheStatus:   "HIT",
			ContentLength: 48_213,
			Headers:       http.Header{"Cf-Cache-Status": {"HIT"}, "Age": {"1"}},
			Timing:        tasks.Timing{TTFB: 30 * time.Millisecond, ContentTransfer: 8 * time.Millisecond},
		},
		CacheCheckAttempts: []tasks.CacheCheckAttempt{
			{Attempt: 1, CacheStatus: "MISS", Delay: 700 * time.Millisecond},
			{Attempt: 2, CacheStatus: "HIT", Delay: 700 * time.Millisecond},
		},
	}
}

// TestFinishStoresTheFetch: every column of a cache-warming fetch lands in
// the task's row as written, in milliseconds, through the batched finish;
// the second request's columns stay NULL when none was made, and a failure
// without a response records none of them.
func TestFinishStoresTheFetch(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := setup(t, tasks.Config{})
	f.job(t, tasks.JobOptions{Concurrency: 3}, 3)
	claimed, err := f.queue.Claim(ctx, "w1", 3)
	if err != nil || len(claimed) != 3 {
		t.Fatalf("claimed %d tasks, %v; want 3", len(claimed), err)
	}

	warmed := warmedResult()
	hit := warmedResult()
	hit.CacheStatus, hit.RedirectURL, hit.Second, hit.CacheCheckAttempts = "HIT", "", nil, nil
	failed := tasks.TaskResult{Err: errors.New("dial tcp: connection refused"), Permanent: true}
	rep, err := f.queue.Finish(ctx, []tasks.Outcome{
		{Task: claimed[0], Result: warmed}, {Task: claimed[1], Result: hit}, {Task: claimed[2], Result: failed},
	})
	if err != nil || rep.Completed != 2 || rep.Failed != 1 {
		t.Fatalf("Finish = %+v, %v; want 2 completed and 1 failed", rep, err)
	}

	ms := func(v int32) *int32 { return &v }
	wantWarmed := fetchColumns{
		StatusCode: ms(200), ResponseTime: ms(412), CacheStatus: ptr("MISS"),
		ContentType: ptr("text/html; charset=utf-8"), ContentLength: ptr(int64(48_213)),
		Headers: warmed.Headers, RedirectURL: ptr("https://www.example.com/p00000/"),
		DNSLookupTime: ms(12), TCPConnectionTime: ms(21), TLSHandshakeTime: ms(43), TTFB: ms(380),
		ContentTransferTime: ms(32),
		SecondResponseTime:  ptr(int64(38)), SecondCacheStatus: ptr("HIT"), SecondContentLength: ptr(int64(48_213)),
		SecondHeaders:       warmed.Second.Headers,
		SecondDNSLookupTime: ms(0), SecondTCPConnectionTime: ms(0), SecondTLSHandshakeTime: ms(0),
		SecondTTFB: ms(30), SecondContentTransferTime: ms(8),
		CacheCheckAttempts: warmed.CacheCheckAttempts,
	}
	wantHit := wantWarmed
	wantHit.CacheStatus, wantHit.RedirectURL = ptr("HIT"), nil
	wantHit.SecondResponseTime, wantHit.SecondCacheStatus, wantHit.SecondContentLength, wantHit.SecondHeaders = nil, nil, nil, nil
	wantHit.SecondDNSLookupTime, wantHit.SecondTCPConnectionTime, wantHit.SecondTLSHandshakeTime = nil, nil, nil
	wantHit.SecondTTFB, wantHit.SecondContentTransferTime, wantHit.CacheCheckAttempts = nil, nil, nil

	for i, want := range []fetchColumns{wantWarmed, wantHit, {}} {
		if diff := cmp.Diff(want, fetchColumnsOf(t, taskRow(t, f, claimed[i].ID))); diff != "" {
			t.Errorf("task %d's row (-want +got):\n%s", i, diff)
		}
	}
	// The stored checks are the application's JSON.
	var raw []map[string]any
	if err := json.Unmarshal(taskRow(t, f, claimed[0].ID).CacheCheckAttempts, &raw); err != nil {
		t.Fatal(err)
	}
	wantRaw := []map[string]any{
		{"attempt": 1.0, "cache_status": "MISS", "delay_ms": 700.0},
		{"attempt": 2.0, "cache_status": "HIT", "delay_ms": 700.0},
	}
	if diff := cmp.Diff(wantRaw, raw); diff != "" {
		t.Errorf("cache_check_attempts as stored (-want +got):\n%s", diff)
	}
}

// TestFinishRefusesNegativeFetchTimes: a negative duration anywhere in the
// fetch is an ArgumentError naming it, and nothing of the batch is written.
func TestFinishRefusesNegativeFetchTimes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := setup(t, tasks.Config{})
	f.job(t, tasks.JobOptions{}, 1)
	task, err := f.queue.ClaimOne(ctx, "w1")
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]func(*tasks.TaskResult){
		"outcomes[0].Result.Timing":                      func(r *tasks.TaskResult) { r.Timing.TTFB = -time.Millisecond },
		"outcomes[0].Result.Second":                      func(r *tasks.TaskResult) { r.Second.ResponseTime = -1 },
		"outcomes[0].Result.Second.Timing":               func(r *tasks.TaskResult) { r.Second.Timing.DNSLookup = -1 },
		"outcomes[0].Result.CacheCheckAttempts[1].Delay": func(r *tasks.TaskResult) { r.CacheCheckAttempts[1].Delay = -1 },
	}
	before, row := takeFingerprint(t, f), taskRow(t, f, task.ID)
	for arg, edit := range cases {
		r := warmedResult()
		edit(&r)
		err := f.queue.Complete(ctx, *task, r)
		checkArgumentError(t, err, arg)
	}
	checkUnchanged(t, f, before, "Complete with negative times")
	if diff := cmp.Diff(row, taskRow(t, f, task.ID)); diff != "" {
		t.Errorf("the refused outcomes changed the task's row (-before +after):\n%s", diff)
	}
	if err := f.queue.Complete(ctx, *task, warmedResult()); err != nil {
		t.Fatalf("Complete after the refusals: %v", err)
	}
}
