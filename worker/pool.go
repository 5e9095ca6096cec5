// Package worker runs tasks: a pool of workers that claim tasks from the
// queue, run a Handler on each, and record the outcomes.
//
// Claiming is either one task per claim, each worker calling ClaimNextTask
// for itself (ClaimBatch 1), or batched, one fetcher claiming up to
// ClaimBatch tasks per statement for the pool's workers. Outcomes go to one
// completer that writes them in batches (up to CompletionBatch per
// statement, none waiting longer than CompletionDelay); those with links
// first pass a linker that creates the links' pages (Queue.PrepareLinks), so
// that the completer's transaction writes only their tasks. Idle workers wait for
// a NOTIFY from enqueueing (ListenURL) and poll every PollInterval in any
// case. Long tasks have their leases extended; a maintenance loop rescues
// tasks whose worker died and keeps job progress rolled up.
//
// Run returns when its context ends, after a graceful shutdown: no new
// claims, running handlers get ShutdownTimeout to finish, tasks not started
// or not finished in time are handed back to the queue, and every outcome is
// written. Nothing is left running.
package worker

import (
	"context"
	cryptorand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/blue-banded-bee/taskq/tasks"
)

// Handler runs one task and says how it went.
type Handler interface {
	Handle(ctx context.Context, t tasks.Task) tasks.TaskResult
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(context.Context, tasks.Task) tasks.TaskResult

// Handle calls f.
func (f HandlerFunc) Handle(ctx context.Context, t tasks.Task) tasks.TaskResult { return f(ctx, t) }

// Config tunes a Pool. Zero values take the defaults given.
type Config struct {
	// Workers is how many tasks run at once. Default 8.
	Workers int
	// ClaimBatch is how many tasks one claim statement takes: 1 (the
	// default) has every worker claim for itself; more has one fetcher claim
	// for all, keeping up to Workers + ClaimBatch tasks in hand.
	ClaimBatch int
	// Claimers bounds how many of the workers' claim statements (ClaimBatch
	// 1) are in flight at once; the other workers wait their turn in the
	// pool rather than in the database. Claims past what the database can
	// run at once only queue there, slowing every claim, and a paced task's
	// request must go out within tasks.Config.PaceStartBudget of its claim
	// statement being sent: the slower the claims, the more paced tasks are
	// handed back for starting late. Default DefaultClaimers (the
	// measurements are in docs/operations/PACING.md, "Limits").
	Claimers int
	// ID prefixes the worker ids recorded on claimed tasks. Default
	// hostname-pid-random, unique per pool.
	ID string
	// ListenURL, when set, is a direct (not pooled) database URL on which the
	// pool LISTENs for new tasks, so idle workers wake at once.
	ListenURL string
	// PollInterval is how often idle workers look for tasks without a
	// notification. Default 1s.
	PollInterval time.Duration
	// CompletionBatch and CompletionDelay bound how outcomes are buffered
	// before they are written. Defaults 1000 and 5ms.
	CompletionBatch int
	CompletionDelay time.Duration
	// MaintainInterval is how often the pool runs the queue's maintenance
	// (rescue expired leases, finish drained jobs, roll up progress).
	// Default 1s; negative disables it (another process does it).
	MaintainInterval time.Duration
	// SeenLinks bounds how many link paths the pool remembers having
	// written (per job, over all jobs), to drop the links a crawl finds on
	// every page before they cost a statement; links another outcome is
	// carrying to the database are dropped too. Default 1,000,000; past it
	// the pool forgets and starts again.
	SeenLinks int
	// ShutdownTimeout is how long running handlers may go on after Run's
	// context ends before their context is cancelled and their tasks handed
	// back. Default 30s.
	ShutdownTimeout time.Duration
	// Logger receives errors and notable events. Default: discard.
	Logger *slog.Logger
}

// DefaultClaimers is Config.Claimers' default.
const DefaultClaimers = 8

func (c Config) withDefaults() Config {
	if c.Workers <= 0 {
		c.Workers = 8
	}
	if c.ClaimBatch <= 0 {
		c.ClaimBatch = 1
	}
	c.ClaimBatch = min(c.ClaimBatch, tasks.MaxBatch)
	if c.Claimers <= 0 {
		c.Claimers = DefaultClaimers
	}
	if c.ID == "" {
		host, _ := os.Hostname()
		var b [3]byte
		_, _ = cryptorand.Read(b[:])
		c.ID = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b[:]))
	}
	if c.PollInterval <= 0 {
		c.PollInterval = time.Second
	}
	if c.CompletionBatch <= 0 {
		c.CompletionBatch = 1000
	}
	c.CompletionBatch = min(c.CompletionBatch, tasks.MaxBatch)
	if c.CompletionDelay <= 0 {
		c.CompletionDelay = 5 * time.Millisecond
	}
	if c.MaintainInterval == 0 {
		c.MaintainInterval = time.Second
	}
	if c.SeenLinks <= 0 {
		c.SeenLinks = 1_000_000
	}
	if c.ShutdownTimeout <= 0 {
		c.ShutdownTimeout = 30 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Pool runs tasks from a queue. Create it with New and start it with Run.
type Pool struct {
	q       *tasks.Queue
	handler Handler
	cfg     Config
	waker   *tasks.Waker
	stats   counters

	// held are the tasks claimed and not yet finished, for lease extension.
	heldMu sync.Mutex
	held   map[string]tasks.Task

	// outcomes go from the workers to the linker, which passes them on to
	// the completer (finishing), those with links once their pages exist.
	outcomes  chan outcome
	finishing chan outcome
	// seen: links already written, per job (the linker reads it, the
	// completer adds to it).
	seen *seenLinks

	// turns wakes one idle claimer per token, where the Waker wakes them
	// all: a claim that succeeded hands a turn on (there may be more), a
	// finished task gives one (it freed a slot), and the pace timer gives
	// one when a paced domain's next start comes. So paced domains cost a
	// few statements per start, not one per idle worker.
	turns chan struct{}
	pace  paceTimer
	// claimers holds a token per claim statement in flight (Config.Claimers).
	claimers chan struct{}
}

// paceTimer is the pool's one timer for the next paced start: it gives a
// turn when it fires. The hint it is armed with (Queue.NextPacedStart) is
// read at most once per paceHintTTL for the whole pool.
type paceTimer struct {
	mu      sync.Mutex
	timer   *time.Timer
	at      time.Time // when the timer fires; zero: not armed
	asked   time.Time // when the hint was last read
	hint    time.Time // the next paced start it said; zero: none
	hintErr bool
}

// paceHintTTL is how long the pool reuses the next paced start it read.
const paceHintTTL = 100 * time.Millisecond

// outcome is a finished task on its way to the completer, or one to hand
// back unfinished.
type outcome struct {
	tasks.Outcome
	release bool
}

// New returns a pool that runs handler on tasks from q.
func New(q *tasks.Queue, handler Handler, cfg Config) *Pool {
	cfg = cfg.withDefaults()
	return &Pool{
		q:         q,
		handler:   handler,
		cfg:       cfg,
		waker:     tasks.NewWaker(),
		held:      map[string]tasks.Task{},
		outcomes:  make(chan outcome, cfg.CompletionBatch),
		finishing: make(chan outcome, cfg.CompletionBatch),
		seen:      newSeenLinks(cfg.SeenLinks),
		turns:     make(chan struct{}, cfg.Workers),
		claimers:  make(chan struct{}, cfg.Claimers),
	}
}

// Config is the pool's configuration, defaults filled in.
func (p *Pool) Config() Config { return p.cfg }

// Waker is the pool's wake-up signal; tests and embedders may Wake it.
func (p *Pool) Waker() *tasks.Waker { return p.waker }

// Run runs the pool until ctx ends, then shuts down gracefully (see the
// package documentation). It returns nil after a clean shutdown.
func (p *Pool) Run(ctx context.Context) error {
	p.stats.start(time.Now())
	defer func() { p.stats.stop(time.Now()) }()

	// Handlers keep running for ShutdownTimeout after ctx ends.
	workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	stopWatch := context.AfterFunc(ctx, func() {
		time.AfterFunc(p.cfg.ShutdownTimeout, cancelWork)
	})
	defer stopWatch()

	var background sync.WaitGroup
	if p.cfg.ListenURL != "" {
		background.Go(func() {
			err := tasks.Listen(ctx, p.cfg.ListenURL, p.waker, func(err error) {
				if ctx.Err() == nil {
					p.cfg.Logger.Warn("listen for new tasks", "err", err)
				}
			})
			if err != nil {
				p.cfg.Logger.Error("listen for new tasks stopped; polling only", "err", err)
			}
		})
	}
	if p.cfg.MaintainInterval > 0 {
		background.Go(func() { p.maintain(ctx) })
	}
	// Leases are extended until the last handler has returned and its
	// outcome is written, not just until ctx ends: handlers may run for
	// ShutdownTimeout after that, and a lapsed lease would let another
	// process's rescuer hand their tasks out again.
	leaseCtx, stopLeases := context.WithCancel(context.WithoutCancel(ctx))
	defer stopLeases()
	background.Go(func() { p.extendLeases(leaseCtx) })

	go func() {
		defer close(p.finishing)
		p.link()
	}()
	completerDone := make(chan struct{})
	go func() {
		defer close(completerDone)
		p.complete()
	}()

	var workers sync.WaitGroup
	if p.cfg.ClaimBatch == 1 {
		for i := range p.cfg.Workers {
			id := fmt.Sprintf("%s-w%d", p.cfg.ID, i)
			workers.Go(func() { p.claimAndRun(ctx, workCtx, id) })
		}
	} else {
		queue := make(chan tasks.Task, p.cfg.Workers+p.cfg.ClaimBatch)
		var inFlight atomic.Int64
		taken := make(chan struct{}, 1)
		for range p.cfg.Workers {
			workers.Go(func() {
				for t := range queue {
					p.run(ctx, workCtx, t)
					inFlight.Add(-1)
					select {
					case taken <- struct{}{}:
					default:
					}
				}
			})
		}
		p.fetch(ctx, queue, &inFlight, taken)
		close(queue)
	}
	workers.Wait()
	close(p.outcomes)
	<-completerDone
	stopLeases()
	background.Wait()
	return nil
}

// claimContext is the context claims run in: not cancelled by shutdown, so
// a claim in flight finishes and the pool learns which tasks it took (and
// hands them back) rather than abandoning a statement that may already have
// committed, whose tasks would then wait out their lease.
func claimContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), writeTimeout)
}

// claimAndRun is one worker claiming a task at a time for itself.
func (p *Pool) claimAndRun(ctx, workCtx context.Context, workerID string) {
	failures := 0
	for ctx.Err() == nil {
		select {
		case p.claimers <- struct{}{}:
		case <-ctx.Done():
			return
		}
		start := time.Now()
		cctx, cancel := claimContext(ctx)
		t, err := p.q.ClaimOne(cctx, workerID)
		cancel()
		<-p.claimers
		p.stats.claimed(time.Since(start), t != nil)
		if t != nil && ctx.Err() != nil {
			p.outcomes <- outcome{Outcome: tasks.Outcome{Task: *t}, release: true}
			return
		}
		switch {
		case errors.Is(err, tasks.ErrNoTasksAvailable):
			failures = 0
			p.idle(ctx)
			continue
		case err != nil:
			if ctx.Err() == nil {
				failures++
				p.cfg.Logger.Warn("claim", "worker", workerID, "err", err)
				sleep(ctx, backoff(failures))
			}
			continue
		}
		failures = 0
		p.giveTurns(1)
		p.run(ctx, workCtx, *t)
	}
}

// fetch claims batches for the pool's workers until ctx ends, keeping at
// most Workers + ClaimBatch tasks in hand, and hands back what no worker
// started.
func (p *Pool) fetch(ctx context.Context, queue chan tasks.Task, inFlight *atomic.Int64, taken <-chan struct{}) {
	limit := int64(p.cfg.Workers + p.cfg.ClaimBatch)
	// Claim when at least this many places are free, so batches stay large.
	threshold := int64(max(1, p.cfg.ClaimBatch/2))
	fetcherID := p.cfg.ID + "-f"
	failures := 0
	for ctx.Err() == nil {
		free := limit - inFlight.Load()
		if free < threshold {
			select {
			case <-ctx.Done():
			case <-taken:
			}
			continue
		}
		start := time.Now()
		cctx, cancel := claimContext(ctx)
		claimed, err := p.q.Claim(cctx, fetcherID, int(min(free, int64(p.cfg.ClaimBatch))))
		cancel()
		p.stats.claimedBatch(time.Since(start), len(claimed))
		if len(claimed) > 0 && ctx.Err() != nil {
			for _, t := range claimed {
				p.outcomes <- outcome{Outcome: tasks.Outcome{Task: t}, release: true}
			}
			break
		}
		if err != nil {
			if ctx.Err() == nil {
				failures++
				p.cfg.Logger.Warn("claim batch", "err", err)
				sleep(ctx, backoff(failures))
			}
			continue
		}
		failures = 0
		if len(claimed) == 0 {
			if inFlight.Load() == 0 {
				p.idle(ctx)
			} else {
				// Work may be blocked only by the concurrency limits, which
				// running tasks free when they finish.
				p.armPace(ctx)
				select {
				case <-ctx.Done():
				case <-taken:
				case <-p.waker.Wait():
				case <-p.turns:
				case <-time.After(p.cfg.PollInterval):
				}
			}
			continue
		}
		p.hold(claimed...)
		inFlight.Add(int64(len(claimed)))
		for _, t := range claimed {
			queue <- t
		}
	}
	// Shutting down: hand back the tasks no worker has taken.
	var unstarted []tasks.Task
drain:
	for {
		select {
		case t := <-queue:
			unstarted = append(unstarted, t)
			inFlight.Add(-1)
		default:
			break drain
		}
	}
	for _, t := range unstarted {
		p.outcomes <- outcome{Outcome: tasks.Outcome{Task: t}, release: true}
	}
}

// run runs the handler on one claimed task and passes on the outcome.
func (p *Pool) run(ctx, workCtx context.Context, t tasks.Task) {
	if ctx.Err() != nil && p.cfg.ClaimBatch > 1 {
		// Claimed but not started before shutdown: hand it back.
		p.outcomes <- outcome{Outcome: tasks.Outcome{Task: t}, release: true}
		return
	}
	p.hold(t)
	start := time.Now()
	if t.Late(start) {
		// Claimed in time, but the request would go out too late for the
		// domain's pace to hold at the site: hand it back unrun.
		p.stats.paceMissed.Add(1)
		p.outcomes <- outcome{Outcome: tasks.Outcome{Task: t}, release: true}
		return
	}
	p.stats.running.Add(1)
	res := p.handle(workCtx, t)
	p.stats.running.Add(-1)
	p.stats.worked(time.Since(start))
	if errors.Is(res.Err, tasks.ErrPaceMissed) {
		p.stats.paceMissed.Add(1)
		p.outcomes <- outcome{Outcome: tasks.Outcome{Task: t}, release: true}
		return
	}
	release := workCtx.Err() != nil && res.Err != nil
	waitStart := time.Now()
	p.outcomes <- outcome{Outcome: tasks.Outcome{Task: t, Result: res}, release: release}
	p.stats.waited(time.Since(waitStart))
}

// handle calls the handler, turning a panic into a failure.
func (p *Pool) handle(ctx context.Context, t tasks.Task) (res tasks.TaskResult) {
	defer func() {
		if r := recover(); r != nil {
			p.cfg.Logger.Error("handler panicked", "task", t.ID, "panic", r)
			res = tasks.TaskResult{Err: fmt.Errorf("handler panicked: %v", r)}
		}
	}()
	return p.handler.Handle(ctx, t)
}

// idle waits for a notification, a turn, the poll interval (with jitter, so
// idle workers do not poll in step), or the end of ctx. When a paced
// domain's task waits for its next start, the pace timer gives a turn then;
// with LISTEN (which announces new tasks, resumed jobs and changed paces)
// the worker then does not poll before that start, however far off.
func (p *Pool) idle(ctx context.Context) {
	start := time.Now()
	poll := p.cfg.PollInterval/2 + rand.N(p.cfg.PollInterval)
	if until, ok := p.armPace(ctx); ok && p.cfg.ListenURL != "" {
		poll = max(poll, until)
	}
	select {
	case <-ctx.Done():
	case <-p.waker.Wait():
	case <-p.turns:
	case <-time.After(poll):
	}
	p.stats.idled(time.Since(start))
}

// giveTurns wakes up to n idle claimers (see Pool.turns); turns nobody
// takes wait in the channel, as many as there are workers.
func (p *Pool) giveTurns(n int) {
	for range min(n, cap(p.turns)) {
		select {
		case p.turns <- struct{}{}:
		default:
			return
		}
	}
}

// armPace reads when the next paced start is (shared by the pool, see
// paceHintTTL), sets the pace timer to give a turn then, and returns how
// long that is; ok is false when no paced task waits.
func (p *Pool) armPace(ctx context.Context) (until time.Duration, ok bool) {
	t := &p.pace
	t.mu.Lock()
	defer t.mu.Unlock()
	now := time.Now()
	if now.Sub(t.asked) >= paceHintTTL {
		t.asked = now
		wait, found, err := p.q.NextPacedStart(ctx, "")
		t.hint, t.hintErr = time.Time{}, err != nil
		if err != nil {
			if ctx.Err() == nil {
				p.cfg.Logger.Warn("next paced start", "err", err)
			}
		} else if found {
			t.hint = now.Add(wait)
		}
	}
	if t.hint.IsZero() || !t.hint.After(now) {
		return 0, false
	}
	if t.at.IsZero() || t.hint.Before(t.at) || !t.at.After(now) {
		if t.timer == nil {
			t.timer = time.AfterFunc(time.Hour, func() {
				p.pace.mu.Lock()
				p.pace.at = time.Time{}
				p.pace.mu.Unlock()
				p.giveTurns(1)
			})
		}
		t.timer.Reset(t.hint.Sub(now))
		t.at = t.hint
	}
	return t.hint.Sub(now), true
}

// link passes outcomes on to the completer until the outcomes channel
// closes. It drops the links written before or on their way with another
// outcome (seen), and those of outcomes
// with links left wait, in batches bounded as the completer's are, for
// Queue.PrepareLinks to create their pages: those statements run beside the
// completer's transaction, which then writes only the links' tasks.
func (p *Pool) link() {
	p.gather(p.outcomes, func(o *outcome) bool {
		// Only a completed task's links are written (Queue.Finish).
		if o.release || o.Result.Err != nil || o.Result.Skip || len(o.Result.Links) == 0 {
			p.finishing <- *o
			return false
		}
		n := len(o.Result.Links)
		o.Result.Links = p.seen.unseen(o.Task, o.Result.Links)
		p.stats.foundLinks(n, n-len(o.Result.Links))
		if len(o.Result.Links) == 0 {
			p.finishing <- *o
			return false
		}
		return true
	}, p.prepareLinks)
}

// prepareLinks creates the pages of a batch's links and passes the batch
// on. If that fails, Finish creates them in its own transaction.
func (p *Pool) prepareLinks(batch []outcome) {
	if len(batch) == 0 {
		return
	}
	outcomes := make([]tasks.Outcome, len(batch))
	for i, o := range batch {
		outcomes[i] = o.Outcome
	}
	ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
	err := p.q.PrepareLinks(ctx, outcomes)
	cancel()
	if err != nil {
		p.cfg.Logger.Warn("links' pages not created ahead; the outcomes' write creates them", "err", err)
	}
	for i, o := range batch {
		o.Outcome = outcomes[i]
		p.finishing <- o
	}
}

// complete writes outcomes in batches until the finishing channel closes,
// then writes what is left.
func (p *Pool) complete() {
	p.gather(p.finishing, func(*outcome) bool { return true }, p.flush)
}

// gather reads outcomes from in until it closes and hands them to flush in
// batches of at most CompletionBatch, none waiting longer than
// CompletionDelay, then flushes what is left. An outcome for which keep
// returns false joins no batch: keep has dealt with it.
func (p *Pool) gather(in <-chan outcome, keep func(*outcome) bool, flush func([]outcome)) {
	var batch []outcome
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		select {
		case o, ok := <-in:
			if !ok {
				flush(batch)
				return
			}
			if !keep(&o) {
				continue
			}
			if len(batch) == 0 {
				timer.Reset(p.cfg.CompletionDelay)
			}
			batch = append(batch, o)
			if len(batch) >= p.cfg.CompletionBatch {
				timer.Stop()
				flush(batch)
				batch = batch[:0]
			}
		case <-timer.C:
			flush(batch)
			batch = batch[:0]
		}
	}
}

// flush writes a batch of outcomes, retrying while the database is
// unavailable (see retry). Outcomes it cannot write leave their tasks
// running; their leases expire and the rescuer returns them, so nothing is
// lost.
func (p *Pool) flush(batch []outcome) {
	if len(batch) == 0 {
		return
	}
	var release []tasks.Task
	var outcomes []tasks.Outcome
	for _, o := range batch {
		p.unhold(o.Task.ID)
		if o.release {
			release = append(release, o.Task)
			continue
		}
		outcomes = append(outcomes, o.Outcome)
	}
	if len(outcomes) > 0 {
		defer p.seen.settled(outcomes)
		// Finish owns the retry of rows a claimer locks for an instant;
		// retry owns the database being away. What Finish leaves in Busy
		// (after an error, or when ctx ended with rows still locked) is
		// what the next attempt writes.
		p.retry("finish", func(ctx context.Context) error {
			start := time.Now()
			rep, err := p.q.Finish(ctx, outcomes)
			p.stats.finishCall(time.Since(start))
			p.stats.finished(rep)
			p.seen.written(outcomes, rep.Linked)
			if len(rep.Lost) > 0 {
				p.cfg.Logger.Warn("outcomes not recorded: leases lost", "tasks", rep.Lost)
			}
			// Finishing frees concurrency that claimers may be waiting for: a
			// turn per task, not a wake-up for every idle worker (with paced
			// domains most would find nothing).
			p.giveTurns(len(outcomes) - len(rep.Busy))
			if len(rep.Busy) > 0 {
				outcomes = rep.Busy
				if err == nil {
					err = errStillLocked
				}
				if rep.PaceErr != nil {
					p.cfg.Logger.Warn("outcomes recorded; their domains' paces not updated", "err", rep.PaceErr)
				}
			}
			return err
		})
	}
	if len(release) > 0 {
		p.retry("hand back", func(ctx context.Context) error {
			lost, err := p.q.Release(ctx, release)
			if err == nil {
				p.stats.handedBack(len(release)-len(lost), len(lost))
			}
			return err
		})
	}
}

// errStillLocked: an attempt ended with rows claimers still held locked.
var errStillLocked = errors.New("tasks still locked by claimers")

// How long one attempt to write outcomes may take, and how long flush keeps
// retrying (the database restarting, say) before it leaves the tasks to the
// rescuer. Independent of ShutdownTimeout, which is the handlers' grace.
const (
	writeTimeout  = 30 * time.Second
	writePatience = 2 * time.Minute
)

func (p *Pool) retry(what string, fn func(context.Context) error) {
	deadline := time.Now().Add(writePatience)
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
		err := fn(ctx)
		cancel()
		if err == nil {
			return
		}
		var argErr *tasks.ArgumentError
		if errors.As(err, &argErr) || time.Now().After(deadline) {
			p.cfg.Logger.Error(what+": giving up; the rescuer will return these tasks", "err", err)
			p.stats.unrecorded()
			return
		}
		p.cfg.Logger.Warn(what+": retrying", "attempt", attempt, "err", err)
		time.Sleep(backoff(attempt))
	}
}

func (p *Pool) hold(ts ...tasks.Task) {
	p.heldMu.Lock()
	for _, t := range ts {
		p.held[t.ID] = t
	}
	p.heldMu.Unlock()
}

func (p *Pool) unhold(id string) {
	p.heldMu.Lock()
	delete(p.held, id)
	p.heldMu.Unlock()
}

// extendLeases keeps the leases of held tasks from expiring: every third of
// a lease, it extends those with less than two thirds left.
func (p *Pool) extendLeases(ctx context.Context) {
	lease := p.q.Config().Lease
	tick := time.NewTicker(lease / 3)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		now := time.Now()
		var due []tasks.Task
		p.heldMu.Lock()
		for _, t := range p.held {
			if t.LeaseExpiresAt.Sub(now) < 2*lease/3 {
				due = append(due, t)
			}
		}
		p.heldMu.Unlock()
		for len(due) > 0 {
			n := min(len(due), tasks.MaxBatch)
			extended, err := p.q.ExtendLeases(ctx, due[:n])
			due = due[n:]
			if err != nil && !errors.Is(err, tasks.ErrLeaseLost) {
				p.cfg.Logger.Warn("extend leases", "err", err)
				continue
			}
			p.heldMu.Lock()
			for _, t := range extended {
				if _, still := p.held[t.ID]; still {
					p.held[t.ID] = t
				}
			}
			p.heldMu.Unlock()
		}
	}
}

func (p *Pool) maintain(ctx context.Context) {
	tick := time.NewTicker(p.cfg.MaintainInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		rep, err := p.q.Maintain(ctx)
		// A pass that fails after rescuing has still rescued.
		p.stats.rescued(rep.Rescued)
		if err != nil {
			if ctx.Err() == nil {
				p.cfg.Logger.Warn("maintenance", "err", err)
			}
			continue
		}
		if len(rep.Rescued) > 0 {
			p.cfg.Logger.Info("rescued tasks whose lease expired", "count", len(rep.Rescued))
			p.waker.Wake()
		}
		if len(rep.Finished) > 0 {
			p.cfg.Logger.Info("jobs finished", "jobs", rep.Finished)
		}
	}
}

// backoff is an exponential delay with jitter: 50ms doubling to 5s.
func backoff(attempt int) time.Duration {
	d := min(50*time.Millisecond<<min(attempt-1, 7), 5*time.Second)
	return d/2 + rand.N(d/2+1)
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
