package tasks

import (
	"context"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgxlisten"
)

// Waker tells idle workers that new tasks may be claimable. Wait returns a
// channel closed at the next Wake; every waiter sees it.
type Waker struct {
	mu sync.Mutex
	ch chan struct{}
}

// NewWaker returns a Waker with no wake-up pending.
func NewWaker() *Waker { return &Waker{ch: make(chan struct{})} }

// Wait returns a channel that is closed at the next Wake.
func (w *Waker) Wait() <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.ch
}

// Wake wakes everyone waiting now.
func (w *Waker) Wake() {
	w.mu.Lock()
	defer w.mu.Unlock()
	close(w.ch)
	w.ch = make(chan struct{})
}

// Listen holds a LISTEN on NotifyChannel over a connection of its own to url
// and wakes w at every notification, until ctx ends. It reconnects after a
// lost connection, and wakes w once connected, since notifications sent while
// it was away are lost. It needs a direct connection: a transaction pooler
// cannot keep a LISTEN; use polling there. onError, if not nil, hears about
// lost connections.
func Listen(ctx context.Context, url string, w *Waker, onError func(error)) error {
	l := &pgxlisten.Listener{
		Connect: func(ctx context.Context) (*pgx.Conn, error) {
			return pgx.Connect(ctx, url)
		},
		LogError: func(_ context.Context, err error) {
			if onError != nil {
				onError(err)
			}
		},
		// pgxlisten's default is a minute; workers poll meanwhile, but
		// a restarted database should be heard from again promptly.
		ReconnectDelay: time.Second,
	}
	l.Handle(NotifyChannel, wakeHandler{w})
	err := l.Listen(ctx)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

type wakeHandler struct{ w *Waker }

func (h wakeHandler) HandleNotification(context.Context, *pgconn.Notification, *pgx.Conn) error {
	h.w.Wake()
	return nil
}

// HandleBacklog runs after each (re)connect: anything enqueued while the
// listener was not connected went unannounced.
func (h wakeHandler) HandleBacklog(context.Context, string, *pgx.Conn) error {
	h.w.Wake()
	return nil
}
