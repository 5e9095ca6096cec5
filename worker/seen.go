package worker

import (
	"sync"

	"github.com/blue-banded-bee/taskq/tasks"
)

// seenLinks remembers, per job, the link paths the pool has written to the
// database, so that links found again (the navigation on every page of a
// site) are dropped before they cost a statement. Only paths whose write
// committed go in: a dropped link is always in the job already. Bounded:
// past max paths it forgets everything and starts again; the database's
// unique keys stay the truth. The linker reads it while the completer adds
// to it.
type seenLinks struct {
	mu     sync.Mutex
	max, n int
	jobs   map[string]map[string]struct{}
}

func newSeenLinks(max int) *seenLinks {
	return &seenLinks{max: max, jobs: map[string]map[string]struct{}{}}
}

// unseen returns the links of jobID not written before, in their order.
func (s *seenLinks) unseen(jobID string, links []tasks.Page) []tasks.Page {
	s.mu.Lock()
	defer s.mu.Unlock()
	known := s.jobs[jobID]
	if known == nil {
		return links
	}
	out := links[:0:0]
	for _, l := range links {
		if _, ok := known[l.Path]; !ok {
			out = append(out, l)
		}
	}
	return out
}

// written remembers the links of the outcomes whose tasks are in linked.
func (s *seenLinks) written(outcomes []tasks.Outcome, linked []string) {
	if len(linked) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := make(map[string]bool, len(linked))
	for _, id := range linked {
		ids[id] = true
	}
	for _, o := range outcomes {
		if !ids[o.Task.ID] {
			continue
		}
		known := s.jobs[o.Task.JobID]
		if known == nil {
			known = map[string]struct{}{}
			s.jobs[o.Task.JobID] = known
		}
		for _, l := range o.Result.Links {
			if _, ok := known[l.Path]; ok {
				continue
			}
			if s.n >= s.max {
				clear(s.jobs)
				s.n = 0
				known = map[string]struct{}{}
				s.jobs[o.Task.JobID] = known
			}
			known[l.Path] = struct{}{}
			s.n++
		}
	}
}
