package fsm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestWordLists(t *testing.T) {
	word := regexp.MustCompile(`^[a-z]+$`)
	lists := []struct {
		name  string
		words []string
		min   int
	}{
		{"adjectives", adjectives[:], 600},
		{"colors", colors[:], 50},
		{"animals", animals[:], 340},
	}
	longest := 2 // the hyphens
	for _, l := range lists {
		if len(l.words) < l.min {
			t.Errorf("%s: %d words, want at least %d", l.name, len(l.words), l.min)
		}
		seen := map[string]bool{}
		max := 0
		for _, w := range l.words {
			if !word.MatchString(w) {
				t.Errorf("%s: %q is not lower-case ASCII letters", l.name, w)
			}
			if seen[w] {
				t.Errorf("%s: duplicate %q", l.name, w)
			}
			seen[w] = true
			max = maxInt(max, len(w))
		}
		if !slices.IsSorted(l.words) {
			t.Errorf("%s: not sorted", l.name)
		}
		longest += max
	}
	if n := IDSpace(); n < 10_000_000 || n != len(adjectives)*len(colors)*len(animals) {
		t.Errorf("id space = %d, want at least 10,000,000", n)
	}
	if longest > MaxIDLen {
		t.Errorf("the longest possible id has %d bytes, over MaxIDLen %d", longest, MaxIDLen)
	}
}

func maxInt(a, b int) int {
	if a > b {
		return a
	}
	return b
}

func seeded(seed byte) io.Reader {
	var s [32]byte
	s[0] = seed
	return rand.NewChaCha8(s)
}

func TestIDGeneratorDeterministicAndValid(t *testing.T) {
	a, b := NewIDGenerator(seeded(1)), NewIDGenerator(seeded(1))
	seen := map[string]bool{}
	for range 1000 {
		x, y := a.Next(), b.Next()
		if x != y {
			t.Fatalf("same seed, different ids: %q %q", x, y)
		}
		if err := ValidateID(x); err != nil {
			t.Fatalf("generated an invalid id: %v", err)
		}
		seen[x] = true
	}
	if len(seen) < 990 {
		t.Errorf("1000 draws gave only %d distinct ids", len(seen))
	}
	if id := NewIDGenerator(nil).Next(); ValidateID(id) != nil {
		t.Errorf("crypto/rand id %q is invalid", id)
	}
}

func TestIDGeneratorRejectionSampling(t *testing.T) {
	// 0 is below 2^64 mod n for every n that is not a power of two, so the
	// first draw of each word is thrown away and the second one used.
	for _, n := range []int{len(adjectives), len(colors), len(animals)} {
		if n&(n-1) == 0 {
			t.Skip("a list length is a power of two; nothing is rejected")
		}
	}
	// Accepted draws are >= 2^64 mod n, which is below n.
	accept := func(n, i int) uint64 { return uint64(n)*1000 + uint64(i) }
	var buf bytes.Buffer
	for _, v := range []uint64{0, accept(len(adjectives), 5), 0, accept(len(colors), 7), 0, accept(len(animals), 3)} {
		buf.Write(binary.LittleEndian.AppendUint64(nil, v))
	}
	id := NewIDGenerator(&buf).Next()
	want := adjectives[5] + "-" + colors[7] + "-" + animals[3]
	if id != want {
		t.Errorf("id = %q, want %q", id, want)
	}
}

func TestIDGeneratorUniform(t *testing.T) {
	// A fixed seed makes this exact, not flaky: with 200 draws expected per
	// colour, every count within ±35% shows no gross bias.
	g := NewIDGenerator(seeded(7))
	counts := make([]int, len(colors))
	for range 200 * len(colors) {
		i, err := g.intn(len(colors))
		if err != nil {
			t.Fatal(err)
		}
		counts[i]++
	}
	for i, c := range counts {
		if c < 130 || c > 270 {
			t.Errorf("colour %q drawn %d times, want about 200", colors[i], c)
		}
	}
}

var noon = time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)

func TestGenerateID(t *testing.T) {
	g := NewIDGenerator(seeded(3))
	calls := 0
	id, err := GenerateID(g, noon, func(string) (bool, error) { calls++; return calls <= 3, nil }, 0)
	if err != nil || calls != 4 || ValidateID(id) != nil {
		t.Errorf("after 3 collisions: %q, %v, %d calls", id, err, calls)
	}

	calls = 0
	_, err = GenerateID(g, noon, func(string) (bool, error) { calls++; return true, nil }, 0)
	if !errors.Is(err, ErrIDSpaceExhausted) || calls != DefaultIDAttempts {
		t.Errorf("all taken: %v after %d calls, want ErrIDSpaceExhausted after %d", err, calls, DefaultIDAttempts)
	}
	calls = 0
	_, err = GenerateID(g, noon, func(string) (bool, error) { calls++; return true, nil }, 3)
	if !errors.Is(err, ErrIDSpaceExhausted) || calls != 3 {
		t.Errorf("3 attempts: %v after %d calls", err, calls)
	}

	boom := errors.New("disk gone")
	if _, err := GenerateID(g, noon, func(string) (bool, error) { return false, boom }, 0); !errors.Is(err, boom) {
		t.Errorf("taken error: %v", err)
	}

	short := NewIDGenerator(bytes.NewReader([]byte{1, 2, 3}))
	if _, err := GenerateID(short, noon, func(string) (bool, error) { return false, nil }, 0); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("reader error: %v", err)
	}
	defer func() {
		if recover() == nil {
			t.Error("Next on a failing reader did not panic")
		}
	}()
	NewIDGenerator(bytes.NewReader(nil)).Next()
}

// TestGenerateIDSharesTheHoursAdjective: the ids drawn in one hour share
// its adjective, the next hour's the next one, the hours wrapping around
// the list; once its first attempts found the hour's ids taken, the rest
// draw from the whole space.
func TestGenerateIDSharesTheHoursAdjective(t *testing.T) {
	g := NewIDGenerator(seeded(5))
	free := func(string) (bool, error) { return false, nil }
	adjectiveOf := func(id string) string { return strings.SplitN(id, "-", 2)[0] }
	hour := noon.Truncate(IDSlot)
	first := ""
	for i := range 50 {
		id, err := GenerateID(g, hour.Add(time.Duration(i)*IDSlot/50), free, 0)
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			first = adjectiveOf(id)
		} else if a := adjectiveOf(id); a != first {
			t.Fatalf("id %d of the hour %q has adjective %q, the first %q", i, id, a, first)
		}
	}
	i := slices.Index(adjectives[:], first)
	next, err := GenerateID(g, hour.Add(IDSlot), free, 0)
	if err != nil {
		t.Fatal(err)
	}
	if want := adjectives[(i+1)%len(adjectives)]; adjectiveOf(next) != want {
		t.Errorf("the next hour's id %q, want adjective %q", next, want)
	}
	round, err := GenerateID(g, hour.Add(time.Duration(len(adjectives))*IDSlot), free, 0)
	if err != nil {
		t.Fatal(err)
	}
	if adjectiveOf(round) != first {
		t.Errorf("the hour %d hours on: id %q, want adjective %q again", len(adjectives), round, first)
	}

	var tried []string
	id, err := GenerateID(g, hour, func(id string) (bool, error) {
		tried = append(tried, id)
		return adjectiveOf(id) == first, nil // the hour's adjective is used up
	}, 0)
	if err != nil {
		t.Fatal(err)
	}
	const half = 3 // the attempts the doc and README promise
	if hourAttempts != half {
		t.Errorf("hourAttempts = %d, want %d", hourAttempts, half)
	}
	for j, id := range tried[:half] {
		if adjectiveOf(id) != first {
			t.Errorf("attempt %d drew %q, want the hour's adjective %q", j+1, id, first)
		}
	}
	if len(tried) <= half || adjectiveOf(id) == first {
		t.Errorf("with the hour's ids taken: %q after %d attempts, want another adjective after more than %d", id, len(tried), half)
	}
	later := map[string]bool{}
	for range 200 {
		id, err := GenerateID(g, hour, func(id string) (bool, error) { return adjectiveOf(id) == first, nil }, 0)
		if err != nil {
			t.Fatal(err)
		}
		later[adjectiveOf(id)] = true
	}
	if len(later) < 100 {
		t.Errorf("the later attempts drew %d distinct adjectives in 200 ids, want them from the whole list", len(later))
	}
}

// TestSlotAdjective: the slots follow one another across the epoch, and
// the adjectives wrap around the list.
func TestSlotAdjective(t *testing.T) {
	epoch := time.Unix(0, 0)
	for _, tc := range []struct {
		at   time.Time
		want int
	}{
		{epoch, 0},
		{epoch.Add(IDSlot - time.Second), 0},
		{epoch.Add(IDSlot), 1},
		{epoch.Add(-time.Second), len(adjectives) - 1},
		{epoch.Add(-IDSlot), len(adjectives) - 1},
		{epoch.Add(-IDSlot - time.Second), len(adjectives) - 2},
		{epoch.Add(time.Duration(len(adjectives)) * IDSlot), 0},
		{epoch.Add(time.Duration(len(adjectives)+3) * IDSlot), 3},
	} {
		if got := slotAdjective(tc.at); got != tc.want {
			t.Errorf("slotAdjective(%v) = %d, want %d", tc.at.UTC(), got, tc.want)
		}
	}
}
