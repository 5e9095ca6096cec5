package tasks

import (
	"context"
	"fmt"
	"time"

	"github.com/blue-banded-bee/taskq/gen"
)

// Metrics rows, as the measurement queries return them.
type (
	ThroughputMinute = gen.TaskThroughputPerMinuteRow
	WaitEventCount   = gen.WaitEventCountsRow
	LockWait         = gen.LockWaitsCurrentRow
	BlockedQuery     = gen.BlockedQueriesRow
	QueueDepthRow    = gen.QueueDepthRow
)

// Throughput is the plan's measure: tasks finished per minute over the last
// window, newest minute first.
func (q *Queue) Throughput(ctx context.Context, window time.Duration) ([]ThroughputMinute, error) {
	if window <= 0 || window > 30*24*time.Hour {
		return nil, invalid("window", "%s, want more than 0 and at most 30 days", window)
	}
	var rows []ThroughputMinute
	err := q.run(ctx, func(db gen.DBTX) (err error) {
		rows, err = q.q.TaskThroughputPerMinute(ctx, db, int32(window/time.Second))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("task throughput: %w", err)
	}
	return rows, nil
}

// WaitEvents is the plan's lock-wait query: this database's sessions waiting
// now, grouped by wait event.
func (q *Queue) WaitEvents(ctx context.Context) ([]WaitEventCount, error) {
	var rows []WaitEventCount
	err := q.run(ctx, func(db gen.DBTX) (err error) {
		rows, err = q.q.WaitEventCounts(ctx, db)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("wait events: %w", err)
	}
	return rows, nil
}

// LockWaits lists every lock wait in this database now, oldest first, with
// how long it has lasted and who blocks it.
func (q *Queue) LockWaits(ctx context.Context) ([]LockWait, error) {
	var rows []LockWait
	err := q.run(ctx, func(db gen.DBTX) (err error) {
		rows, err = q.q.LockWaitsCurrent(ctx, db)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("lock waits: %w", err)
	}
	return rows, nil
}

// BlockedQueries pairs each blocked session with the sessions blocking it.
func (q *Queue) BlockedQueries(ctx context.Context) ([]BlockedQuery, error) {
	var rows []BlockedQuery
	err := q.run(ctx, func(db gen.DBTX) (err error) {
		rows, err = q.q.BlockedQueries(ctx, db)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("blocked queries: %w", err)
	}
	return rows, nil
}

// QueueDepth counts the tasks of unfinished jobs by job and status.
func (q *Queue) QueueDepth(ctx context.Context) ([]QueueDepthRow, error) {
	var rows []QueueDepthRow
	err := q.run(ctx, func(db gen.DBTX) (err error) {
		rows, err = q.q.QueueDepth(ctx, db)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("queue depth: %w", err)
	}
	return rows, nil
}
