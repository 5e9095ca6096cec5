package worker

import (
	"sync"

	"github.com/blue-banded-bee/taskq/tasks"
)

// seenLinks remembers, per job, the link paths the pool has written to the
// database, and those on their way there, so that links found again (the
// navigation on every page of a site) are dropped before they cost a
// statement. A written path is in the job already. A path on its way is
// carried by one outcome (its owner) until that outcome's write ends: if
// the write fails, the owner's task stays unfinished and runs again, finding
// the path again, so a link dropped for being on its way is never lost.
// Bounded: past max written paths it forgets them all and starts again; the
// database's unique keys stay the truth. The linker reads and claims paths
// while the completer settles them.
type seenLinks struct {
	mu     sync.Mutex
	max, n int
	jobs   map[string]map[string]struct{}
	// inFlight maps a job's paths on their way to the task carrying them.
	inFlight map[string]map[string]string
}

func newSeenLinks(max int) *seenLinks {
	return &seenLinks{max: max, jobs: map[string]map[string]struct{}{}, inFlight: map[string]map[string]string{}}
}

// unseen returns the links of t's job neither written before nor carried by
// another outcome, in their order, and makes t their carrier.
func (s *seenLinks) unseen(t tasks.Task, links []tasks.Page) []tasks.Page {
	s.mu.Lock()
	defer s.mu.Unlock()
	known := s.jobs[t.JobID]
	flying := s.inFlight[t.JobID]
	if flying == nil {
		flying = map[string]string{}
		s.inFlight[t.JobID] = flying
	}
	out := links[:0:0]
	for _, l := range links {
		if _, ok := known[l.Path]; ok {
			continue
		}
		if owner, ok := flying[l.Path]; ok && owner != t.ID {
			continue
		}
		flying[l.Path] = t.ID
		out = append(out, l)
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

// settled ends the outcomes' carrying of their links, written or not: a
// link written is known from now on, one not written goes again with the
// task's next run.
func (s *seenLinks) settled(outcomes []tasks.Outcome) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, o := range outcomes {
		flying := s.inFlight[o.Task.JobID]
		for _, l := range o.Result.Links {
			if flying[l.Path] == o.Task.ID {
				delete(flying, l.Path)
			}
		}
		if len(flying) == 0 {
			delete(s.inFlight, o.Task.JobID)
		}
	}
}
