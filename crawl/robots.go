package crawl

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/blue-banded-bee/taskq/tasks"
)

// Pacer is where the fetcher records a domain's robots.txt Crawl-delay:
// tasks.Queue (the pace every worker's claim then obeys).
type Pacer interface {
	SetDomainPaceIfAbsent(ctx context.Context, domain string, interval time.Duration, source string) (bool, error)
}

// robotsCache remembers which domains' robots.txt the fetcher has read, so
// each is read once per process.
type robotsCache struct {
	mu   sync.Mutex
	seen map[string]*sync.Once
}

func (c *robotsCache) once(domain string) *sync.Once {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.seen == nil {
		c.seen = map[string]*sync.Once{}
	}
	o, ok := c.seen[domain]
	if !ok {
		o = &sync.Once{}
		c.seen[domain] = o
	}
	return o
}

// MaxRobotsBody bounds how much of a robots.txt is read.
const MaxRobotsBody = 512 << 10

// readRobots reads the domain's robots.txt, once per fetcher, and records
// its Crawl-delay for the fetcher's user agent (or "*") with the Pacer,
// unless the domain has a pace already. A missing or unreadable robots.txt
// sets nothing.
func (f *Fetcher) readRobots(ctx context.Context, client *http.Client, scheme, domain string) {
	if f.Pacer == nil {
		return
	}
	f.robots.once(domain).Do(func() {
		req, err := newRequest(ctx, http.MethodGet, scheme+"://"+domain+"/robots.txt")
		if err != nil {
			return
		}
		resp, err := client.Do(req)
		if err != nil {
			return
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, MaxRobotsBody))
			return
		}
		delay, ok := CrawlDelay(io.LimitReader(resp.Body, MaxRobotsBody), UserAgent)
		if !ok {
			return
		}
		interval, err := tasks.CheckPaceSeconds("Crawl-delay", delay)
		if err != nil {
			interval = tasks.MaxPaceInterval
		}
		if interval <= 0 {
			return
		}
		_, _ = f.Pacer.SetDomainPaceIfAbsent(ctx, domain, interval, tasks.PaceRobots)
	})
}

// CrawlDelay is the Crawl-delay (seconds) robots.txt gives the group that
// names userAgent's product token, or else the "*" group; ok is false when
// the matching group gives none. A record's user-agent lines start a group
// (consecutive ones share it); matching is case-insensitive, on the token
// before any "/".
func CrawlDelay(robots io.Reader, userAgent string) (seconds float64, ok bool) {
	product := strings.ToLower(strings.SplitN(userAgent, "/", 2)[0])
	var agents []string
	inRules := false
	var mine, star *float64
	sc := bufio.NewScanner(robots)
	for sc.Scan() {
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		key, value, found := strings.Cut(line, ":")
		if !found {
			continue
		}
		key = strings.ToLower(strings.TrimSpace(key))
		value = strings.TrimSpace(value)
		switch key {
		case "user-agent":
			if inRules {
				agents, inRules = nil, false
			}
			agents = append(agents, strings.ToLower(value))
		case "crawl-delay":
			inRules = true
			d, err := strconv.ParseFloat(value, 64)
			if err != nil {
				continue
			}
			for _, a := range agents {
				switch {
				case a == "*" && star == nil:
					star = &d
				case a != "*" && a != "" && strings.HasPrefix(product, a) && mine == nil:
					mine = &d
				}
			}
		default:
			inRules = true
		}
	}
	switch {
	case mine != nil:
		return *mine, true
	case star != nil:
		return *star, true
	}
	return 0, false
}

// RetryAfter reads a Retry-After header: delay-seconds or an HTTP date
// (then the time from now until it). ok is false when there is none or it
// cannot be read; a date in the past is 0.
func RetryAfter(h http.Header, now time.Time) (time.Duration, bool) {
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0, false
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs < 0 {
			return 0, false
		}
		return time.Duration(min(secs, int64(tasks.MaxPaceInterval/time.Second))) * time.Second, true
	}
	at, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return min(max(0, at.Sub(now)), tasks.MaxPaceInterval), true
}

// connectionFailed says a request failed for want of a connection to the
// site (refused, reset, unreachable, timed out), not because the caller's
// context ended.
func connectionFailed(ctx context.Context, err error) bool {
	if err == nil || ctx.Err() != nil {
		return false
	}
	var netErr net.Error
	var opErr *net.OpError
	return errors.As(err, &opErr) || (errors.As(err, &netErr) && netErr.Timeout()) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF)
}
