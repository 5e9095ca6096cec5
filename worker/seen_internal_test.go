package worker

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/blue-banded-bee/taskq/tasks"
)

func paths(pages []tasks.Page) []string {
	out := make([]string, len(pages))
	for i, p := range pages {
		out[i] = p.Path
	}
	return out
}

func linksAt(ps ...string) []tasks.Page {
	out := make([]tasks.Page, len(ps))
	for i, p := range ps {
		out[i] = tasks.Page{Path: p}
	}
	return out
}

// A link on its way to the database with one outcome is dropped from the
// others until that outcome's write ends: kept for good when it was
// written, let through again when it was not.
func TestSeenLinksDropsLinksOnTheirWay(t *testing.T) {
	s := newSeenLinks(100)
	a := tasks.Task{ID: "a", JobID: "j"}
	b := tasks.Task{ID: "b", JobID: "j"}
	c := tasks.Task{ID: "c", JobID: "j"}
	other := tasks.Task{ID: "o", JobID: "k"}
	check := func(what string, got []tasks.Page, want ...string) {
		t.Helper()
		if diff := cmp.Diff(want, paths(got)); diff != "" {
			t.Errorf("%s (-want +got):\n%s", what, diff)
		}
	}
	oa := tasks.Outcome{Task: a, Result: tasks.TaskResult{Links: linksAt("/x", "/y")}}
	oa.Result.Links = s.unseen(a, oa.Result.Links)
	check("a's links", oa.Result.Links, "/x", "/y")
	check("b's links while a carries /x", s.unseen(b, linksAt("/x", "/z")), "/z")
	check("another job's", s.unseen(other, linksAt("/x")), "/x")
	// a's outcome is sent again (its write was retried): it still carries them.
	check("a's links again", s.unseen(a, linksAt("/x", "/y")), "/x", "/y")

	// a's write fails: its task runs again, and its links go with whoever finds them.
	s.settled([]tasks.Outcome{oa})
	oc := tasks.Outcome{Task: c, Result: tasks.TaskResult{Links: s.unseen(c, linksAt("/x", "/y"))}}
	check("c's links after a's write failed", oc.Result.Links, "/x", "/y")

	// c's write commits: its links are known from then on, for every task.
	s.written([]tasks.Outcome{oc}, []string{"c"})
	s.settled([]tasks.Outcome{oc})
	check("a's links after c's were written", s.unseen(a, linksAt("/x", "/y", "/w")), "/w")
	if n := len(s.inFlight["j"]); n != 2 { // /z (b's) and /w (a's)
		t.Errorf("%d paths on their way in job j, want 2", n)
	}
}
