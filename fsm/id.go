package fsm

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"sync"
	"time"
)

// DefaultIDAttempts is how many ids GenerateID draws before giving up, as
// the plugin does.
const DefaultIDAttempts = 20

// IDGenerator draws delegation ids of the form adjective-color-animal,
// uniformly from the word lists (GenerateID may fix the adjective). It is
// safe for concurrent use.
type IDGenerator struct {
	mu  sync.Mutex
	r   io.Reader
	buf [8]byte
}

// NewIDGenerator returns a generator reading randomness from r; nil means
// crypto/rand. Tests pass a seeded reader for repeatable ids.
func NewIDGenerator(r io.Reader) *IDGenerator {
	if r == nil {
		r = rand.Reader
	}
	return &IDGenerator{r: r}
}

// Next returns a fresh id. It panics if the reader fails, as crypto/rand
// does; use GenerateID to get the error instead.
func (g *IDGenerator) Next() string {
	id, err := g.next()
	if err != nil {
		panic(err)
	}
	return id
}

func (g *IDGenerator) next() (string, error) { return g.draw(-1) }

// draw returns a fresh id whose adjective is adjectives[adjective], or
// one drawn uniformly when adjective is negative.
func (g *IDGenerator) draw(adjective int) (string, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	a := adjective
	if a < 0 {
		var err error
		if a, err = g.intn(len(adjectives)); err != nil {
			return "", err
		}
	}
	c, err := g.intn(len(colors))
	if err != nil {
		return "", err
	}
	n, err := g.intn(len(animals))
	if err != nil {
		return "", err
	}
	return adjectives[a] + "-" + colors[c] + "-" + animals[n], nil
}

// intn returns a uniform integer in [0, n) by rejection sampling: draws
// below 2^64 mod n are thrown away, so every residue is equally likely.
func (g *IDGenerator) intn(n int) (int, error) {
	un := uint64(n)
	threshold := -un % un // (2^64 - n) mod n = 2^64 mod n
	for {
		if _, err := io.ReadFull(g.r, g.buf[:]); err != nil {
			return 0, fmt.Errorf("read random bytes for a delegation id: %w", err)
		}
		v := binary.LittleEndian.Uint64(g.buf[:])
		if v >= threshold {
			return int(v % un), nil
		}
	}
}

// IDSlot is how long the ids GenerateID draws share their adjective, and
// hourAttempts how many of its attempts keep it.
const (
	IDSlot       = time.Hour
	hourAttempts = 3
)

// GenerateID draws ids from g until taken reports one free, at most attempts
// times (0 or less means DefaultIDAttempts). taken should check both the
// known ids and existing artifact files. After that many collisions it
// returns an error wrapping ErrIDSpaceExhausted. A race between taken and
// the append is caught by the log's expected-version check, not here.
//
// The first three attempts keep the adjective of at's hour (the
// adjectives take the hours in turn, one each, IDSlot long): ids drawn in
// the same hour share their first word, so the trees a store keys by id
// (the log's stream index, the records and roots views) take each new one
// in the same few pages, as they take increasing keys. An id drawn from
// the whole space lands anywhere in them: in a large store, on a page no
// commit has touched for long, which bbolt then frees far from the pages
// commits write, and reuses, so that later commits write all over the
// file (BenchmarkLifecyclesHistory at 1M events, a history and new ids
// drawn from the whole space: 0.78 of an empty store's lifecycle rate;
// both drawn this way: 0.91-0.95, the means of three sessions). The later
// attempts draw from the whole space, so that an hour that took many of
// its adjective's ids finds one without trying each attempt there first.
func GenerateID(g *IDGenerator, at time.Time, taken func(id string) (bool, error), attempts int) (string, error) {
	if attempts <= 0 {
		attempts = DefaultIDAttempts
	}
	hour := slotAdjective(at)
	for i := range attempts {
		adjective := hour
		if i >= hourAttempts {
			adjective = -1
		}
		id, err := g.draw(adjective)
		if err != nil {
			return "", err
		}
		used, err := taken(id)
		if err != nil {
			return "", fmt.Errorf("check delegation id %q: %w", id, err)
		}
		if !used {
			return id, nil
		}
	}
	return "", fmt.Errorf("%w: %d random ids were all taken; the word lists hold %d ids", ErrIDSpaceExhausted, attempts, IDSpace())
}

// slotAdjective returns the index of the adjective of at's slot: the
// slots since the Unix epoch, floored (before it too), modulo the list.
func slotAdjective(at time.Time) int {
	slot := at.Unix() / int64(IDSlot/time.Second)
	if at.Unix() < 0 && at.Unix()%int64(IDSlot/time.Second) != 0 {
		slot--
	}
	n := int64(len(adjectives))
	return int((slot%n + n) % n)
}

// IDSpace is the number of distinct ids the generator can draw.
func IDSpace() int { return len(adjectives) * len(colors) * len(animals) }
