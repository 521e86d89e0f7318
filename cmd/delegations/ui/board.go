package ui

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/delegations/delegations/cmd/delegations/api"
	"github.com/delegations/delegations/eventlog"
	"github.com/delegations/delegations/fsm"
	"github.com/delegations/delegations/projection"
)

// Groups of the board, in the order shown: what needs attention first.
const (
	GroupFailed  = "failed-delivery" // a terminal notification whose delivery failed
	GroupOverdue = "overdue"         // active past its deadline (the sweeper is behind or down)
	GroupUnread  = "unread"          // terminal, result not read since completion
	GroupRunning = "running"         // registered or running
	GroupRecent  = "recent"          // terminal and read
)

// groupOrder and groupTitles describe the groups for the page.
var (
	groupOrder  = []string{GroupFailed, GroupOverdue, GroupUnread, GroupRunning, GroupRecent}
	groupTitles = map[string]string{
		GroupFailed:  "Failed delivery",
		GroupOverdue: "Overdue",
		GroupUnread:  "Unread results",
		GroupRunning: "Running",
		GroupRecent:  "Recent",
	}
)

// Summary is what the board shows of one delegation.
type Summary struct {
	ID            string    `json:"id"`
	Title         string    `json:"title"`
	Agent         string    `json:"agent"`
	Model         string    `json:"model,omitempty"`
	Project       string    `json:"projectId"`
	Root          string    `json:"rootSessionID"`
	Parent        string    `json:"parentSessionID"`
	Status        fsm.State `json:"status"`
	CreatedAt     time.Time `json:"createdAt"`
	StartedAt     time.Time `json:"startedAt"`
	CompletedAt   time.Time `json:"completedAt"`
	LastHeartbeat time.Time `json:"lastHeartbeatAt"`
	TimeoutAt     time.Time `json:"timeoutAt"`
	NotifiedAt    time.Time `json:"notifiedAt"`
	ReadAt        time.Time `json:"readAt"`
	Rejected      int       `json:"rejected,omitempty"`
	// DeliveryError is the last failed delivery of its terminal
	// notification while that notification is still due; Failures counts
	// them.
	DeliveryError string `json:"deliveryError,omitempty"`
	Failures      int    `json:"failures,omitempty"`
}

// maxTitle bounds a title made from a prompt; maxText bounds the other
// texts a summary keeps (a title, a delivery error): the board keeps one
// summary per delegation in memory.
const (
	maxTitle = 80
	maxText  = 200
)

// clip returns s cut to n runes, marked with an ellipsis when cut.
func clip(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	return string([]rune(s)[:n-1]) + "…"
}

func summarize(d *fsm.Delegation) Summary {
	title := clip(strings.TrimSpace(d.Title), maxText)
	if title == "" {
		title = clip(strings.Join(strings.Fields(d.Prompt), " "), maxTitle)
	}
	return Summary{
		ID: d.ID, Title: title, Agent: d.Agent, Model: d.Model, Project: d.ProjectID,
		Root: d.RootSessionID, Parent: d.ParentSessionID, Status: d.State,
		CreatedAt: d.CreatedAt, StartedAt: d.StartedAt, CompletedAt: d.CompletedAt,
		LastHeartbeat: d.LastHeartbeatAt, TimeoutAt: d.TimeoutAt, NotifiedAt: d.NotifiedAt,
		ReadAt: d.ReadAt, Rejected: d.Rejected,
	}
}

// group is the board group of s at now.
func (s *Summary) group(now time.Time) string {
	switch {
	case s.DeliveryError != "":
		return GroupFailed
	case s.Status.Active() && !s.TimeoutAt.IsZero() && now.After(s.TimeoutAt):
		return GroupOverdue
	case s.Status.Active():
		return GroupRunning
	case s.ReadAt.IsZero() || s.ReadAt.Before(s.CompletedAt):
		// Not read since it ended. Not fsm.Delegation.Unread, which also
		// asks that the parent was notified: the board shows the results
		// still waiting for their delivery among the unread ("not
		// delivered").
		return GroupUnread
	default:
		return GroupRecent
	}
}

// Change is one event the board applied, as the page's event stream sends
// it.
type Change struct {
	Seq  uint64 `json:"seq"`
	ID   string `json:"id"`
	Kind string `json:"kind"`
}

// ringSize is how many changes the board remembers for event streams that
// fall behind; one further behind reloads the page.
const ringSize = 1024

// board is every delegation's summary, kept current from the log.
type board struct {
	mu       sync.RWMutex
	all      map[string]*Summary
	byRoot   map[string]map[string]struct{} // root session → its delegations' ids
	seq      uint64                         // the last record applied
	ring     []Change                       // the changes after ringFrom, oldest first
	ringFrom uint64
	changed  chan struct{}
	loaded   chan struct{} // closed once the first load is done
	loadOnce sync.Once

	facetMu                   sync.Mutex // guards the facets' cache
	facetOK                   bool
	facetSeq                  uint64
	facetProject              string
	facetProjects, facetRoots []string
}

func newBoard() *board {
	return &board{all: map[string]*Summary{}, byRoot: map[string]map[string]struct{}{}, changed: make(chan struct{}), loaded: make(chan struct{})}
}

// load reads every record and the failed deliveries from the views, as of
// one transaction, and returns the sequence number they reflect.
func (b *board) load(store *projection.Store) (uint64, error) {
	all := map[string]*Summary{}
	var seq uint64
	err := store.Log().View(func(tx *eventlog.Tx) error {
		seq = projection.ViewsCheckpoint(tx)
		return projection.InspectViews(tx, func(e projection.ViewEntry) error {
			switch e.View {
			case projection.ViewRecords:
				if e.Err != nil {
					return nil // verify reports it
				}
				d, err := fsm.UnmarshalDelegation(e.Record)
				if err != nil {
					return nil
				}
				s := summarize(&d)
				all[s.ID] = &s
			case projection.ViewOutbox:
				if n := e.Notification; n != nil && n.Kind == projection.KindTerminal && n.Failures > 0 {
					if s := all[n.Delegation]; s != nil {
						s.DeliveryError, s.Failures = clip(cmp.Or(n.LastError, "delivery failed"), maxText), n.Failures
					}
				}
			}
			return nil
		})
	})
	if err != nil {
		return 0, err
	}
	byRoot := map[string]map[string]struct{}{}
	for id, s := range all {
		if byRoot[s.Root] == nil {
			byRoot[s.Root] = map[string]struct{}{}
		}
		byRoot[s.Root][id] = struct{}{}
	}
	b.mu.Lock()
	b.all, b.byRoot, b.seq, b.ring, b.ringFrom = all, byRoot, seq, nil, seq
	b.broadcast()
	b.mu.Unlock()
	return seq, nil
}

// broadcast wakes the event streams; b.mu must be held.
func (b *board) broadcast() {
	close(b.changed)
	b.changed = make(chan struct{})
}

// apply brings the summary of ev's delegation up to date. When its
// record cannot be read, it applies nothing and returns the error: the
// tail ends and the board loads again, rather than miss the change.
func (b *board) apply(svc *api.Service, ev api.Event) error {
	id := ev.ID
	if strings.HasPrefix(ev.NotificationID, projection.KindTerminal+":") {
		id = strings.TrimPrefix(ev.NotificationID, projection.KindTerminal+":")
	}
	var sum *Summary
	if fsm.ValidateID(id) == nil {
		d, err := svc.Store().Get(id)
		switch {
		case err == nil:
			s := summarize(&d)
			sum = &s
		case !errors.Is(err, fsm.ErrNotFound):
			return fmt.Errorf("record %d: read %s: %w", ev.Seq, id, err)
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.seq = ev.Seq
	if sum == nil {
		return nil // a parent's cycle event, or an id without a record
	}
	if old := b.all[id]; old != nil && sum.State().Terminal() && sum.NotifiedAt.IsZero() {
		sum.DeliveryError, sum.Failures = old.DeliveryError, old.Failures
	}
	if ev.Kind == fsm.KindNotificationFailed.String() {
		sum.DeliveryError = clip(cmp.Or(ev.Error, ev.Reason, "delivery failed"), maxText)
		sum.Failures++
	}
	b.all[id] = sum
	if b.byRoot[sum.Root] == nil {
		b.byRoot[sum.Root] = map[string]struct{}{}
	}
	b.byRoot[sum.Root][id] = struct{}{} // a delegation's root never changes
	b.ring = append(b.ring, Change{Seq: ev.Seq, ID: id, Kind: ev.Kind})
	if len(b.ring) > ringSize {
		n := len(b.ring) - ringSize
		b.ringFrom = b.ring[n-1].Seq
		b.ring = slices.Delete(b.ring, 0, n)
	}
	b.broadcast()
	return nil
}

// State returns s's status (a method so that summaries read like records).
func (s *Summary) State() fsm.State { return s.Status }

// follow keeps the board current until ctx ends: a load, then the event
// tail from there. When the tail fails (the daemon reopening its log
// after a failed write, a record that cannot be read), it waits and loads
// again, waiting longer each time it fails again soon (nextRetry).
func (b *board) follow(ctx context.Context, svc *api.Service, logger *slog.Logger) {
	var wait time.Duration
	for {
		start := time.Now()
		from, err := b.load(svc.Store())
		if err == nil {
			b.loadOnce.Do(func() { close(b.loaded) })
			err = svc.Events(ctx, api.EventsRequest{From: from + 1, Follow: true}, func(ev api.Event) error {
				return b.apply(svc, ev)
			})
		}
		if ctx.Err() != nil {
			return
		}
		wait = nextRetry(wait, time.Since(start))
		logger.Warn("status page: following the log failed; loading it again", "in", wait, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// The wait before the board loads again after its tail failed: retryFollow
// at first, doubled each time the tail fails again within
// maxRetryFollow, up to maxRetryFollow.
const (
	retryFollow    = time.Second
	maxRetryFollow = time.Minute
)

// nextRetry is the wait after a load and tail that lasted ran, when the
// wait before was prev (0: none yet).
func nextRetry(prev, ran time.Duration) time.Duration {
	if prev == 0 || ran >= maxRetryFollow {
		return retryFollow
	}
	return min(2*prev, maxRetryFollow)
}

// since returns the changes after seq and the sequence number they reach,
// or ok false when the ring no longer holds them all (the stream fell
// behind: the page reloads), with the channel closed at the next change.
func (b *board) since(seq uint64) (changes []Change, last uint64, ok bool, next <-chan struct{}) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if seq < b.ringFrom {
		return nil, b.seq, false, b.changed
	}
	i, _ := slices.BinarySearchFunc(b.ring, seq+1, func(c Change, s uint64) int { return cmp.Compare(c.Seq, s) })
	return slices.Clone(b.ring[i:]), b.seq, true, b.changed
}

// Filter selects the board's delegations.
type Filter struct {
	Project string // "" for every project
	Root    string // "" for every root session
	Group   string // "" for every group, each cut to one page
	Page    int    // from 1, within Group
}

// PageSize is how many delegations a group shows per page.
const PageSize = 50

// Group is one group of a board page.
type Group struct {
	Name  string    `json:"name"`
	Title string    `json:"title"`
	Total int       `json:"total"`
	Page  int       `json:"page"`
	Pages int       `json:"pages"`
	Items []Summary `json:"items"`
}

// Board is a board page.
type Board struct {
	Seq      uint64   `json:"seq"`
	Total    int      `json:"total"` // delegations matching the filter
	Groups   []Group  `json:"groups"`
	Projects []string `json:"projects"` // every project, for the filter
	Roots    []string `json:"roots"`    // the most recent root sessions (of the project), for the filter
	Filter   Filter   `json:"filter"`
}

// maxRoots bounds the root sessions offered in the filter.
const maxRoots = 200

// page returns the board page f selects at now. Its cost is one pass over
// the summaries and a partial sort of each group's page (the filter's
// choices are cached until the log grows).
func (b *board) page(f Filter, now time.Time) Board {
	b.mu.RLock()
	defer b.mu.RUnlock()
	out := Board{Seq: b.seq, Filter: f}
	groups := map[string][]*Summary{}
	scan := func(yield func(*Summary) bool) {
		for _, s := range b.all {
			if !yield(s) {
				return
			}
		}
	}
	if f.Root != "" {
		scan = func(yield func(*Summary) bool) {
			for id := range b.byRoot[f.Root] {
				if !yield(b.all[id]) {
					return
				}
			}
		}
	}
	for s := range scan {
		if (f.Project != "" && s.Project != f.Project) || (f.Root != "" && s.Root != f.Root) {
			continue
		}
		g := s.group(now)
		if f.Group != "" && g != f.Group {
			continue
		}
		groups[g] = append(groups[g], s)
		out.Total++
	}
	for _, name := range groupOrder {
		if f.Group != "" && name != f.Group {
			continue
		}
		ss := groups[name]
		g := Group{Name: name, Title: groupTitles[name], Total: len(ss), Page: max(f.Page, 1), Items: []Summary{}}
		g.Pages = max(1, (len(ss)+PageSize-1)/PageSize)
		g.Page = min(g.Page, g.Pages)
		lo := (g.Page - 1) * PageSize
		hi := min(lo+PageSize, len(ss))
		for _, s := range topK(ss, hi, order(name))[lo:hi] {
			g.Items = append(g.Items, *s)
		}
		out.Groups = append(out.Groups, g)
	}
	out.Projects, out.Roots = b.facets(f.Project)
	return out
}

// facets returns the filter's choices: every project, and the most recent
// root sessions of project ("" for all). They change only with the log,
// so they are kept until it grows. b.mu must be held for reading.
func (b *board) facets(project string) (projects, roots []string) {
	b.facetMu.Lock()
	defer b.facetMu.Unlock()
	if b.facetOK && b.facetSeq == b.seq && b.facetProject == project {
		return b.facetProjects, b.facetRoots
	}
	seen := map[string]bool{}
	latest := map[string]time.Time{}
	for _, s := range b.all {
		if !seen[s.Project] {
			seen[s.Project] = true
			projects = append(projects, s.Project)
		}
		if project != "" && s.Project != project {
			continue
		}
		if t, ok := latest[s.Root]; !ok || s.CreatedAt.After(t) {
			latest[s.Root] = s.CreatedAt
		}
	}
	slices.Sort(projects)
	for r := range latest {
		roots = append(roots, r)
	}
	slices.SortFunc(roots, func(x, y string) int { return cmp.Or(latest[y].Compare(latest[x]), cmp.Compare(x, y)) })
	roots = roots[:min(len(roots), maxRoots)]
	b.facetOK, b.facetSeq, b.facetProject, b.facetProjects, b.facetRoots = true, b.seq, project, projects, roots
	return projects, roots
}

// order is the order within a group: deliveries that failed and results
// by completion, newest first; overdue by deadline, earliest first;
// running by registration, newest first. Ties go by id.
func order(group string) func(a, b *Summary) int {
	return func(a, b *Summary) int {
		var c int
		switch group {
		case GroupOverdue:
			c = a.TimeoutAt.Compare(b.TimeoutAt)
		case GroupRunning:
			c = b.CreatedAt.Compare(a.CreatedAt)
		default:
			c = b.CompletedAt.Compare(a.CompletedAt)
		}
		return cmp.Or(c, cmp.Compare(a.ID, b.ID))
	}
}

// topK orders the first k of ss (in place) and returns ss: a full sort
// only when the page is deep.
func topK(ss []*Summary, k int, less func(a, b *Summary) int) []*Summary {
	if k >= len(ss)/4 {
		slices.SortFunc(ss, less)
		return ss
	}
	// The k best so far, sorted: each later one better than the k-th is
	// inserted in place (a bounded heap would be faster for large k; k
	// is a few pages of PageSize here).
	best := slices.Clone(ss[:k])
	slices.SortFunc(best, less)
	for _, s := range ss[k:] {
		if k == 0 || less(s, best[k-1]) >= 0 {
			continue
		}
		i, _ := slices.BinarySearchFunc(best, s, less)
		copy(best[i+1:], best[i:k-1])
		best[i] = s
	}
	copy(ss, best)
	return ss
}

// get returns the summary of id.
func (b *board) get(id string) (Summary, bool) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	s, ok := b.all[id]
	if !ok {
		return Summary{}, false
	}
	return *s, true
}
