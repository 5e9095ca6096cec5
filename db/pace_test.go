package db_test

import (
	"context"
	"errors"
	"math"
	"testing"
	"time"

	"github.com/blue-banded-bee/taskq/db"
	"github.com/blue-banded-bee/taskq/tasks"
)

// The application's pace calls: bad delays are typed errors and write
// nothing; a pace set is read back, cleared, and gone.
func TestDomainPaceAPI(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d, _ := open(t, db.Options{})
	for _, bad := range []float64{math.NaN(), math.Inf(1), math.Inf(-1), -0.5, 1e7} {
		err := d.SetDomainPace(ctx, "example.com", bad)
		var argErr *db.ArgumentError
		if !errors.As(err, &argErr) || argErr.Arg != "delaySeconds" || !errors.Is(err, db.ErrInvalidArgument) {
			t.Errorf("SetDomainPace(%v) = %v, want an *ArgumentError for delaySeconds", bad, err)
		}
	}
	if _, err := d.DomainPace(ctx, "example.com"); !errors.Is(err, db.ErrNotFound) {
		t.Fatalf("a refused pace was written: DomainPace = %v", err)
	}
	if err := d.SetDomainPace(ctx, "example.com", 1.25); err != nil {
		t.Fatal(err)
	}
	p, err := d.DomainPace(ctx, "example.com")
	if err != nil {
		t.Fatal(err)
	}
	if p.Floor != 1250*time.Millisecond || p.Interval != 1250*time.Millisecond || p.Source != tasks.PaceSet {
		t.Errorf("pace %+v, want floor and interval 1.25s, set", p)
	}
	if had, err := d.ClearDomainPace(ctx, "example.com"); err != nil || !had {
		t.Fatalf("ClearDomainPace = %v, %v", had, err)
	}
	if had, err := d.ClearDomainPace(ctx, "example.com"); err != nil || had {
		t.Errorf("second ClearDomainPace = %v, %v; want false", had, err)
	}
	if had, err := d.ClearDomainPace(ctx, "never.example"); err != nil || had {
		t.Errorf("ClearDomainPace of an unknown domain = %v, %v; want false", had, err)
	}
}
