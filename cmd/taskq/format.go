package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"
)

// count writes n with thousands separated: 41,893.
func count[T ~int | ~int32 | ~int64](n T) string {
	s := strconv.FormatInt(int64(n), 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	if neg {
		b.WriteByte('-')
	}
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// rate writes a rate as a whole number with thousands separated.
func rate(x float64) string {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return "-"
	}
	return count(int64(math.Round(x)))
}

// duration rounds d to three significant figures (1.23ms, 45.6s), and to
// the second from a minute on (2m5s): what a person reads, not the
// nanoseconds time.Duration prints.
func duration(d time.Duration) time.Duration {
	switch {
	case d >= time.Minute:
		return d.Round(time.Second)
	case d < 0:
		return -duration(-d)
	}
	unit := time.Duration(1)
	for d/unit >= 1000 {
		unit *= 10
	}
	return d.Round(unit)
}

// progressInterval is how often a command whose standard error is not a
// terminal prints its progress line by default.
const progressInterval = 30 * time.Second

// startProgress shows line() while a command runs: redrawn in place every
// 500 ms when stderr is a terminal, else printed as a line of its own every
// interval (never when interval is 0), so that a log shows the run going.
// The returned function stops it.
func startProgress(ctx context.Context, stderr io.Writer, interval time.Duration, line func() string) (stop func()) {
	terminal := isTerminal(stderr)
	if terminal {
		interval = 500 * time.Millisecond
	}
	if interval <= 0 {
		return func() {}
	}
	tick := time.NewTicker(interval)
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		progressLoop(ctx, stderr, tick.C, done, terminal, line)
	}()
	return func() {
		tick.Stop()
		close(done)
		<-finished
	}
}

// progressLoop prints line() at each tick until ctx ends or done closes.
func progressLoop(ctx context.Context, w io.Writer, tick <-chan time.Time, done <-chan struct{}, terminal bool, line func() string) {
	for {
		select {
		case <-ctx.Done():
			if terminal {
				fmt.Fprint(w, "\r\033[K")
			}
			return
		case <-done:
			if terminal {
				fmt.Fprint(w, "\r\033[K")
			}
			return
		case <-tick:
			if terminal {
				fmt.Fprintf(w, "\r\033[K%s", line())
			} else {
				fmt.Fprintf(w, "taskq: %s\n", line())
			}
		}
	}
}
