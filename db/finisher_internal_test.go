package db

import (
	"context"
	"testing"
)

// A batch written for several callers is not cut short by one of them
// giving up: its context ends only when every caller's has.
func TestBatchContextEndsWithTheLastCaller(t *testing.T) {
	first, cancelFirst := context.WithCancel(context.Background())
	second, cancelSecond := context.WithCancel(context.Background())
	ctx, cancel := batchContext([]*finishCall{{ctx: first}, {ctx: second}})
	defer cancel()

	cancelFirst()
	select {
	case <-ctx.Done():
		t.Fatal("the batch's context ended with its first caller's")
	default:
	}
	cancelSecond()
	<-ctx.Done() // ends once the last caller's has; a hang fails the test by timeout
	if context.Cause(ctx) != context.Canceled {
		t.Errorf("cause %v, want context.Canceled", context.Cause(ctx))
	}
}
