package fsm

import (
	"errors"
	"testing"
	"unsafe"
)

// TestUnmarshalPayloadNoCopy: it decodes every payload as UnmarshalPayload
// does, and refuses the same garbage, but its strings are the payload's
// own memory.
func TestUnmarshalPayloadNoCopy(t *testing.T) {
	for _, e := range sampleEvents() {
		b := e.MarshalPayload()
		want, werr := UnmarshalPayload(e.Kind, e.ID, e.At, b)
		got, err := UnmarshalPayloadNoCopy(e.Kind, e.ID, e.At, b)
		if got != want || (err == nil) != (werr == nil) {
			t.Errorf("%s: got %+v, %v; UnmarshalPayload gives %+v, %v", e.Kind, got, err, want, werr)
		}
	}
	for _, b := range [][]byte{nil, {2}, cat([]byte{1}, field(tagMessage, []byte{0xff}))} {
		if _, err := UnmarshalPayloadNoCopy(KindProgressed, testID, t0, b); !errors.Is(err, ErrCorruptPayload) {
			t.Errorf("%x: err = %v, want ErrCorruptPayload", b, err)
		}
	}
	b := Event{Kind: KindProgressed, Message: "shared"}.MarshalPayload()
	got, err := UnmarshalPayloadNoCopy(KindProgressed, testID, t0, b)
	if err != nil {
		t.Fatal(err)
	}
	start, end := uintptr(unsafe.Pointer(&b[0])), uintptr(unsafe.Pointer(&b[len(b)-1]))
	if p := uintptr(unsafe.Pointer(unsafe.StringData(got.Message))); p < start || p > end {
		t.Errorf("the message is not in the payload's memory")
	}
	if n := testing.AllocsPerRun(100, func() { _, _ = UnmarshalPayloadNoCopy(KindProgressed, testID, t0, b) }); n != 0 {
		t.Errorf("decoding allocates %v times, want 0", n)
	}
}
