package fsm

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"testing"
	"time"
)

// everyFieldRecord sets every field of Delegation to a distinct non-zero
// value by reflection, so a field added to Delegation without a record tag
// fails the round trip.
func everyFieldRecord(t testing.TB) Delegation {
	var d Delegation
	v := reflect.ValueOf(&d).Elem()
	i := -1
	for _, sf := range reflect.VisibleFields(v.Type()) {
		if sf.Anonymous {
			continue // its fields are visited
		}
		i++
		f, name := v.FieldByIndex(sf.Index), sf.Name
		switch {
		case f.Type() == reflect.TypeFor[time.Time]():
			f.Set(reflect.ValueOf(t0.Add(time.Duration(i) * time.Hour)))
		case f.Kind() == reflect.String:
			f.SetString("v-" + name + " ünïcødé")
		case f.Kind() == reflect.Int || f.Kind() == reflect.Int64:
			f.SetInt(-int64(i) - 1) // negative: exercises zig-zag
		case f.Kind() == reflect.Uint64:
			f.SetUint(math.MaxUint64 - uint64(i))
		default:
			t.Fatalf("field %s: kind %s has no test value; give it a record tag and a value here", name, f.Kind())
		}
	}
	return d
}

// sampleRecords are records of a real life (every stage of history) plus
// extremes.
func sampleRecords(t testing.TB) []Delegation {
	evs := history()
	var out []Delegation
	for i := 1; i <= len(evs); i++ {
		out = append(out, Fold(evs[:i]...))
	}
	epoch := time.Unix(0, 0).UTC()
	return append(out,
		Delegation{},
		everyFieldRecord(t),
		Delegation{
			ID:           testID,
			State:        "future-state",
			Registration: Registration{Timeout: math.MaxInt64},
			ArtifactSize: math.MinInt64,
			Rejected:     math.MaxInt,
			ArtifactHash: math.MaxUint64,
			Version:      math.MaxUint64,
		},
		Delegation{ID: testID, CreatedAt: epoch, ReadAt: time.Unix(-1, -1).UTC(), Registration: Registration{
			Timeout: -time.Nanosecond,
		}},
		Delegation{ID: testID, StartedAt: time.Unix(0, math.MaxInt64).UTC(), CompletedAt: time.Unix(0, math.MinInt64).UTC()},
	)
}

// checkSameRecord compares every field, times with Equal, then the whole.
func checkSameRecord(t testing.TB, got, want Delegation) {
	t.Helper()
	g, w := reflect.ValueOf(got), reflect.ValueOf(want)
	for i := range g.NumField() {
		name := g.Type().Field(i).Name
		if gt, ok := g.Field(i).Interface().(time.Time); ok {
			if wt := w.Field(i).Interface().(time.Time); !gt.Equal(wt) || gt.IsZero() != wt.IsZero() {
				t.Errorf("%s = %v, want %v", name, gt, wt)
			}
			continue
		}
		if !reflect.DeepEqual(g.Field(i).Interface(), w.Field(i).Interface()) {
			t.Errorf("%s = %#v, want %#v", name, g.Field(i).Interface(), w.Field(i).Interface())
		}
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("records differ:\n got %+v\nwant %+v", got, want)
	}
}

func TestRecordRoundTrip(t *testing.T) {
	for i, d := range sampleRecords(t) {
		b := d.AppendRecord(nil)
		if b[0] != RecordVersion {
			t.Fatalf("record %d: first byte %d", i, b[0])
		}
		if len(b) != d.binarySize() {
			t.Errorf("record %d: binarySize %d, encoded %d", i, d.binarySize(), len(b))
		}
		got, err := UnmarshalDelegation(b)
		if err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		checkSameRecord(t, got, d)
		if again := got.AppendRecord(nil); !bytes.Equal(again, b) {
			t.Errorf("record %d: re-encoding differs", i)
		}
		if app := d.AppendRecord([]byte("xy")); !bytes.Equal(app[2:], b) || string(app[:2]) != "xy" {
			t.Errorf("record %d: AppendRecord to a prefix differs", i)
		}
	}
}

// TestRecordSummary: a summary is the record without its four growing
// texts, whatever the record holds.
func TestRecordSummary(t *testing.T) {
	for i, d := range append(sampleRecords(t), everyFieldRecord(t)) {
		got, err := UnmarshalSummary(d.AppendRecord(nil))
		if err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		want := d
		want.Prompt, want.Progress, want.Result, want.Error = "", "", "", ""
		checkSameRecord(t, got, want)
	}
}

func TestRecordFullAndZero(t *testing.T) {
	full := everyFieldRecord(t)
	b := full.AppendRecord(nil)
	// every tag is present, in order, once
	var tags []uint64
	var tag uint64
	for p := 1; p < len(b); {
		var err error
		if tag, _, p, err = nextField(b, p, tag); err != nil {
			t.Fatal(err)
		}
		tags = append(tags, tag)
	}
	if len(tags) != lastRecTag || tags[0] != 1 || tags[len(tags)-1] != lastRecTag {
		t.Errorf("tags of a full record = %v, want 1..%d", tags, lastRecTag)
	}
	n := 0
	for _, f := range reflect.VisibleFields(reflect.TypeFor[Delegation]()) {
		if !f.Anonymous {
			n++
		}
	}
	if n != lastRecTag {
		t.Errorf("Delegation has %d fields and %d record tags", n, lastRecTag)
	}

	var zero Delegation
	if b := zero.AppendRecord(nil); !bytes.Equal(b, []byte{RecordVersion}) {
		t.Errorf("zero record = %x, want just the version byte", b)
	}
	got, err := UnmarshalDelegation([]byte{RecordVersion})
	if err != nil {
		t.Fatal(err)
	}
	checkSameRecord(t, got, zero)
}

func TestRecordWireFormat(t *testing.T) {
	// pin the wire format of one record: a change here breaks stored views
	d := Delegation{ID: "a", State: Running, Registration: Registration{
		Timeout: -2,
	}, CreatedAt: time.Unix(0, 150).In(time.FixedZone("X", 3600)), Version: 300}
	want := []byte{1, recID, 1, 'a', recTimeout, 1, 3, recState, 7, 'r', 'u', 'n', 'n', 'i', 'n', 'g',
		recCreatedAt, 2, 0xac, 0x02, recVersion, 2, 0xac, 0x02}
	b := d.AppendRecord(nil)
	if !bytes.Equal(b, want) {
		t.Fatalf("wire format = %x, want %x", b, want)
	}
	got, err := UnmarshalDelegation(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.CreatedAt.Location() != time.UTC || !got.CreatedAt.Equal(d.CreatedAt) {
		t.Errorf("CreatedAt = %v, want %v in UTC", got.CreatedAt, d.CreatedAt)
	}
}

func TestRecordDeterministic(t *testing.T) {
	for i, d := range sampleRecords(t) {
		// the same instant in another zone, with a monotonic reading, encodes the same
		other := d
		if !other.CreatedAt.IsZero() {
			other.CreatedAt = other.CreatedAt.In(time.FixedZone("Y", -5*3600))
		}
		if a, b := d.AppendRecord(nil), other.AppendRecord(nil); !bytes.Equal(a, b) {
			t.Errorf("record %d: two encodings differ", i)
		}
	}
	now := time.Now()
	a := Delegation{ID: testID, ReadAt: now}
	b := Delegation{ID: testID, ReadAt: now.Round(0)}
	if !bytes.Equal(a.AppendRecord(nil), b.AppendRecord(nil)) {
		t.Error("the monotonic clock reading changes the encoding")
	}
}

func TestRecordSkipsUnknownTags(t *testing.T) {
	p := cat([]byte{1}, field(recID, []byte("a-b-c")), field(lastRecTag+1, []byte("future")), field(1000, []byte{0xff, 0}))
	d, err := UnmarshalDelegation(p)
	if err != nil || d.ID != "a-b-c" {
		t.Fatalf("got %+v, %v", d, err)
	}
	if !bytes.Equal(d.AppendRecord(nil), cat([]byte{1}, field(recID, []byte("a-b-c")))) {
		t.Error("re-encoding kept unknown tags")
	}
}

func TestRecordGarbage(t *testing.T) {
	rec := everyFieldRecord(t)
	full := rec.AppendRecord(nil)
	tests := []struct {
		name string
		in   []byte
	}{
		{"nil", nil},
		{"empty", []byte{}},
		{"version 0", []byte{0}},
		{"version 2", []byte{2, recID, 1, 'x'}},
		{"JSON of an older build", []byte(`{"id":"a-b-c","status":"running","version":1}`)},
		{"truncated tag", []byte{1, 0x80}},
		{"overlong tag varint", append([]byte{1}, bytes.Repeat([]byte{0xff}, 11)...)},
		{"tag without length", []byte{1, recID}},
		{"truncated length", []byte{1, recID, 0x80}},
		{"length past end", []byte{1, recID, 5, 'a', 'b'}},
		{"huge length", append([]byte{1, recID}, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01)},
		{"tag zero", []byte{1, 0, 0}},
		{"descending tags", cat([]byte{1}, field(recPrompt, []byte("a")), field(recID, []byte("b")))},
		{"duplicate tag", cat([]byte{1}, field(recID, []byte("a")), field(recID, []byte("b")))},
		{"invalid UTF-8", cat([]byte{1}, field(recResult, []byte{0xff, 0xfe}))},
		{"invalid UTF-8 state", cat([]byte{1}, field(recState, []byte{0xc3}))},
		{"empty integer", cat([]byte{1}, field(recVersion, nil))},
		{"empty time", cat([]byte{1}, field(recCreatedAt, nil))},
		{"integer with trailing byte", cat([]byte{1}, field(recVersion, []byte{1, 2}))},
		{"truncated integer", cat([]byte{1}, field(recArtifactSize, []byte{0x80}))},
		{"integer overflow", cat([]byte{1}, field(recTimeoutAt, bytes.Repeat([]byte{0xff}, 10)))},
		{"truncated full record", full[:len(full)-1]},
		{"full record with a trailing byte", append(full[:len(full):len(full)], 0)},
	}
	for _, tt := range tests {
		d, err := UnmarshalDelegation(tt.in)
		if !errors.Is(err, ErrCorruptPayload) {
			t.Errorf("%s: err = %v, want ErrCorruptPayload", tt.name, err)
		}
		if d != (Delegation{}) {
			t.Errorf("%s: returned a partial record %+v", tt.name, d)
		}
	}
}

func TestUnmarshalDelegationAllocations(t *testing.T) {
	d := benchRecord(t)
	b := d.AppendRecord(nil)
	n := testing.AllocsPerRun(100, func() {
		if _, err := UnmarshalDelegation(b); err != nil {
			t.Fatal(err)
		}
	})
	if n > 1 {
		t.Errorf("decoding a record allocates %v times, want 1 (one shared string)", n)
	}
	n = testing.AllocsPerRun(100, func() { _ = d.AppendRecord(nil) })
	if n > 1 {
		t.Errorf("encoding a record allocates %v times, want 1", n)
	}
}

func FuzzUnmarshalDelegation(f *testing.F) {
	for _, d := range sampleRecords(f) {
		f.Add(d.AppendRecord(nil))
	}
	f.Add([]byte{})
	f.Add([]byte{1})
	f.Add([]byte{2})
	f.Add([]byte{1, 0x80})
	f.Add([]byte{1, recID, 5, 'a'})
	f.Add([]byte{1, recID, 0, recState, 1, 'x', 40, 1, 0})
	f.Add([]byte{1, recCreatedAt, 1, 0, recReadAt, 2, 0x80, 0x00})
	f.Add([]byte(`{"id":"a-b-c"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := UnmarshalDelegation(data)
		sum, serr := UnmarshalSummary(data)
		if err != nil {
			if !errors.Is(err, ErrCorruptPayload) {
				t.Fatalf("error does not wrap ErrCorruptPayload: %v", err)
			}
			if serr != nil && !errors.Is(serr, ErrCorruptPayload) {
				t.Fatalf("summary error does not wrap ErrCorruptPayload: %v", serr)
			}
			return
		}
		// A summary of a record that decodes is that record without its
		// texts (it checks less: the texts it skips).
		want := d
		want.Prompt, want.Progress, want.Result, want.Error = "", "", "", ""
		if serr != nil || !reflect.DeepEqual(sum, want) {
			t.Fatalf("summary = %+v, %v; want %+v", sum, serr, want)
		}
		b := d.AppendRecord(nil)
		if len(b) != d.binarySize() {
			t.Fatalf("binarySize %d, encoded %d", d.binarySize(), len(b))
		}
		d2, err := UnmarshalDelegation(b)
		if err != nil {
			t.Fatalf("re-encoded record does not decode: %v", err)
		}
		if !reflect.DeepEqual(d2, d) {
			t.Fatalf("decode(encode(d)) != d:\n got %+v\nwant %+v", d2, d)
		}
		if !bytes.Equal(d2.AppendRecord(nil), b) {
			t.Fatal("re-encoding is not stable")
		}
		// whatever decodes also renders without panicking
		_, _ = d.ResultText(), d.Unread()
		if _, err := json.Marshal(d); err != nil {
			t.Fatalf("json of a decoded record: %v", err)
		}
	})
}

// benchRecord is a realistic record: the fold of benchStream, a whole life
// with a long prompt, progress text and result.
func benchRecord(t testing.TB) Delegation {
	var d Delegation
	for _, r := range benchStream() {
		e, err := UnmarshalPayload(r.kind, testID, r.at, r.payload)
		if err != nil {
			t.Fatal(err)
		}
		d = Evolve(d, e)
	}
	return d
}

// BenchmarkUnmarshalDelegation decodes a stored record: what every command
// and Store.Carried pay per delegation. Its baseline is
// BenchmarkUnmarshalDelegationJSON, the same record in its JSON form.
func BenchmarkUnmarshalDelegation(b *testing.B) {
	d := benchRecord(b)
	raw := d.AppendRecord(nil)
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := UnmarshalDelegation(raw); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkUnmarshalDelegationJSON(b *testing.B) {
	d := benchRecord(b)
	raw, err := json.Marshal(d)
	if err != nil {
		b.Fatal(err)
	}
	var back Delegation
	if err := json.Unmarshal(raw, &back); err != nil || back != d {
		b.Fatalf("the JSON form does not round trip: %v", err)
	}
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		var d Delegation
		if err := json.Unmarshal(raw, &d); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAppendDelegation encodes a record, as every command does once;
// its baseline is BenchmarkMarshalDelegationJSON.
func BenchmarkAppendDelegation(b *testing.B) {
	d := benchRecord(b)
	b.ReportAllocs()
	for b.Loop() {
		_ = d.AppendRecord(nil)
	}
}

func BenchmarkMarshalDelegationJSON(b *testing.B) {
	d := benchRecord(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := json.Marshal(d); err != nil {
			b.Fatal(err)
		}
	}
}
