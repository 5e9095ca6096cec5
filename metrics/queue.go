package metrics

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/blue-banded-bee/taskq/tasks"
)

// QueueOptions tune a QueueCollector. Zero values take the defaults given.
type QueueOptions struct {
	// MinInterval is the least time between two reads of the database: a
	// scrape sooner than that after the last read is answered from it, so
	// many scrapers (or a short scrape interval) cost one read per
	// interval. Default 15s, Prometheus' usual scrape interval.
	MinInterval time.Duration
	// Timeout bounds one read. Default 5s.
	Timeout time.Duration
	// Logger receives read errors. Default: discard.
	Logger *slog.Logger
}

// taskStatuses are every task status, so each has a series even at zero.
var taskStatuses = []tasks.TaskStatus{tasks.TaskStatusPending, tasks.TaskStatusRunning, tasks.TaskStatusCompleted, tasks.TaskStatusFailed, tasks.TaskStatusSkipped}

// QueueCollector is a prometheus.Collector of the queue's state as the
// database holds it: the tasks of unfinished jobs by status (the queries of
// `taskq stats`) and the lock waits in the database now.
type QueueCollector struct {
	q    *tasks.Queue
	opts QueueOptions

	depth, lockWaits, lockWaitMax            *prometheus.Desc
	reads, readErrors, lastRead, readSeconds *prometheus.Desc

	// mu is held through a read, so scrapes arriving meanwhile wait for it
	// and are answered from it rather than reading again.
	mu       sync.Mutex
	readAt   time.Time
	last     queueState
	ok       bool // last holds a successful read
	nReads   int64
	nErrors  int64
	lastGood time.Time
	took     time.Duration
}

type queueState struct {
	tasks       map[tasks.TaskStatus]int64
	lockWaits   int
	lockWaitMax time.Duration
}

// NewQueueCollector returns a collector of q's depth and lock waits.
func NewQueueCollector(q *tasks.Queue, opts QueueOptions) *QueueCollector {
	if opts.MinInterval <= 0 {
		opts.MinInterval = 15 * time.Second
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 5 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &QueueCollector{
		q:    q,
		opts: opts,
		depth: prometheus.NewDesc("taskq_queue_tasks",
			"Tasks of the jobs not yet finished, by task status, as of the last database read.", []string{"status"}, nil),
		lockWaits: prometheus.NewDesc("taskq_lock_waits",
			"Locks sessions of this database were waiting for at the last database read.", nil, nil),
		lockWaitMax: prometheus.NewDesc("taskq_lock_wait_max_seconds",
			"How long the oldest of those lock waits had lasted (0 when none).", nil, nil),
		reads: prometheus.NewDesc("taskq_queue_reads_total",
			"Database reads made for the taskq_queue_tasks and taskq_lock_wait gauges (at most one per min interval).", nil, nil),
		readErrors: prometheus.NewDesc("taskq_queue_read_errors_total",
			"Of those reads, the ones that failed; the gauges are left out of scrapes until a read succeeds.", nil, nil),
		lastRead: prometheus.NewDesc("taskq_queue_last_read_timestamp_seconds",
			"When the gauges' values were read (Unix time).", nil, nil),
		readSeconds: prometheus.NewDesc("taskq_queue_read_duration_seconds",
			"How long the last database read took.", nil, nil),
	}
}

// Describe sends the descriptors of every metric Collect sends.
func (c *QueueCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.depth, c.lockWaits, c.lockWaitMax, c.reads, c.readErrors, c.lastRead, c.readSeconds} {
		ch <- d
	}
}

// Collect reads the database if the last read is MinInterval old or more,
// and sends the values of the last read.
func (c *QueueCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.readAt.IsZero() || time.Since(c.readAt) >= c.opts.MinInterval {
		c.read()
	}
	ch <- prometheus.MustNewConstMetric(c.reads, prometheus.CounterValue, float64(c.nReads))
	ch <- prometheus.MustNewConstMetric(c.readErrors, prometheus.CounterValue, float64(c.nErrors))
	ch <- prometheus.MustNewConstMetric(c.readSeconds, prometheus.GaugeValue, c.took.Seconds())
	if !c.ok {
		// A failed read: no figures rather than stale ones.
		return
	}
	ch <- prometheus.MustNewConstMetric(c.lastRead, prometheus.GaugeValue, float64(c.lastGood.UnixNano())/1e9)
	for _, st := range taskStatuses {
		ch <- prometheus.MustNewConstMetric(c.depth, prometheus.GaugeValue, float64(c.last.tasks[st]), string(st))
	}
	ch <- prometheus.MustNewConstMetric(c.lockWaits, prometheus.GaugeValue, float64(c.last.lockWaits))
	ch <- prometheus.MustNewConstMetric(c.lockWaitMax, prometheus.GaugeValue, c.last.lockWaitMax.Seconds())
}

// read reads the database once; c.mu is held. A failure counts as a read
// too, so a database that is down is not asked again before MinInterval.
func (c *QueueCollector) read() {
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), c.opts.Timeout)
	defer cancel()
	st, err := readQueue(ctx, c.q)
	c.readAt, c.took = time.Now(), time.Since(start)
	c.nReads++
	if err != nil {
		c.nErrors++
		c.ok = false
		c.opts.Logger.Warn("metrics: read queue depth and lock waits", "err", err)
		return
	}
	c.last, c.ok, c.lastGood = st, true, start
}

func readQueue(ctx context.Context, q *tasks.Queue) (queueState, error) {
	depth, err := q.QueueDepth(ctx)
	if err != nil {
		return queueState{}, err
	}
	waits, err := q.LockWaits(ctx)
	if err != nil {
		return queueState{}, err
	}
	st := queueState{tasks: map[tasks.TaskStatus]int64{}, lockWaits: len(waits)}
	for _, r := range depth {
		st.tasks[r.Status] += r.Tasks
	}
	for _, w := range waits {
		st.lockWaitMax = max(st.lockWaitMax, time.Duration(w.WaitedMs*float64(time.Millisecond)))
	}
	return st, nil
}
