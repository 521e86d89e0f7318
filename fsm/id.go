package fsm

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"sync"
)

// DefaultIDAttempts is how many ids GenerateID draws before giving up, as
// the plugin does.
const DefaultIDAttempts = 20

// IDGenerator draws delegation ids of the form adjective-color-animal,
// uniformly from the word lists. It is safe for concurrent use.
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

func (g *IDGenerator) next() (string, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	a, err := g.intn(len(adjectives))
	if err != nil {
		return "", err
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

// GenerateID draws ids from g until taken reports one free, at most attempts
// times (0 or less means DefaultIDAttempts). taken should check both the
// known ids and existing artifact files. After that many collisions it
// returns an error wrapping ErrIDSpaceExhausted. A race between taken and
// the append is caught by the log's expected-version check, not here.
func GenerateID(g *IDGenerator, taken func(id string) (bool, error), attempts int) (string, error) {
	if attempts <= 0 {
		attempts = DefaultIDAttempts
	}
	for range attempts {
		id, err := g.next()
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

// IDSpace is the number of distinct ids the generator can draw.
func IDSpace() int { return len(adjectives) * len(colors) * len(animals) }
