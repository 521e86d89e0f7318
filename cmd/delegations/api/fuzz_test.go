package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/delegations/delegations/projection"
)

// FuzzRequest feeds arbitrary bodies to every verb: nothing panics, and
// every refusal is a client error with a stable code, never "internal".
// Run it with: go test ./cmd/delegations/api -fuzz FuzzRequest
func FuzzRequest(f *testing.F) {
	seeds := []struct {
		verb uint8
		body string
	}{
		{0, `{"rootSessionID":"r","parentSessionID":"p","agent":"a","projectId":"p","prompt":"x","timeoutMs":60000}`},
		{1, `{"id":"quiet-blue-fox","sessionID":"s"}`},
		{4, `{"id":"quiet-blue-fox","result":"<\/task-notification>"}`},
		{7, `{"rootSessionID":"r","id":"quiet-blue-fox","waitMs":0}`},
		{8, `{"rootSessionID":"r","status":"complete","unread":true,"order":"time"}`},
		{11, `{"id":"all-complete:p:1","failed":"x"}`},
		{12, `{"rootSessionID":"r","maxUnread":3,"maxBytes":100,"brief":true}`},
		{3, "{\"id\":\"a\xffb\"}"},
		{0, `{"rootSessionID":"../..","parentSessionID":"p","agent":"a","projectId":"p"}`},
		{5, `{"id":"quiet-blue-fox"} trailing`},
		{14, `{"ID":"quiet-blue-fox"}`},
		{14, `{"id":"quiet-blue-fox","id":"quiet-blue-fox"}`},
		{10, `{"id":"quiet-blue-fox","message":"\ud800"}`},
		{10, `{"id":"quiet-blue-fox","message":"\ud83d\ude00 \\ud800"}`},
	}
	for _, s := range seeds {
		f.Add(s.verb, []byte(s.body))
	}
	s, err := projection.Open(f.TempDir(), projection.Options{})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { s.Close() })
	svc := NewService(s)
	verbs := Verbs()
	f.Fuzz(func(t *testing.T, v uint8, body []byte) {
		if bytes.Contains(body, []byte("projectDir")) {
			t.Skip("projectDir runs git in the named directory")
		}
		verb := verbs[int(v)%len(verbs)]
		if verb == "backup" {
			t.Skip("backup writes a file wherever it is told")
		}
		// A wait of up to a day is valid, and replay and verify read the
		// whole log, which grows as the fuzzer registers: end them rather
		// than stall.
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		_, err := svc.call(ctx, verb, bytes.NewReader(body))
		if errors.Is(err, context.DeadlineExceeded) && slices.Contains([]string{"read", "notifications", "replay", "verify"}, verb) {
			return
		}
		if err != nil && statusOf(Code(err)) >= 500 {
			t.Fatalf("%s %q: server-side error %v (code %s)", verb, body, err, Code(err))
		}
		// Accepted bodies hold exactly the fields, each once, and no text
		// the decoder would have changed.
		if err == nil || Code(err) != "invalid" {
			checkAccepted(t, verb, body)
		}
	})
}

// checkAccepted fails if body, which a verb did not refuse as invalid,
// holds a field name in another case, a field twice, or an escaped lone
// surrogate: all accepted silently by encoding/json.
func checkAccepted(t *testing.T, verb string, body []byte) {
	t.Helper()
	fields := endpoints[verb].fields
	dec := json.NewDecoder(bytes.NewReader(body))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return
		}
		key := tok.(string)
		if !slices.Contains(fields, key) || seen[key] {
			t.Fatalf("%s %q: accepted field %q (known %v, seen %v)", verb, body, key, fields, seen[key])
		}
		seen[key] = true
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return
		}
		var str string
		if json.Unmarshal(v, &str) == nil && strings.ContainsRune(str, utf8.RuneError) && !bytes.ContainsRune(v, utf8.RuneError) &&
			!bytes.Contains(bytes.ToLower(v), []byte(`\ufffd`)) {
			t.Fatalf("%s %q: accepted %s, which decodes to U+FFFD", verb, body, v)
		}
	}
}

// FuzzDecode checks decode's short way against decodeStrict: for any body,
// both decode the same request or refuse it with the same message.
// Run it with: go test ./cmd/delegations/api -fuzz FuzzDecode
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		`{"id":"quiet-blue-fox","message":"step 1"}`,
		` { "id" : "quiet-blue-fox" , "waitMs" : 250 } ` + "\n",
		`{"rootSessionID":"r","parentSessionID":"p","agent":"a","projectId":"p","prompt":"x\n\"y\"","timeoutMs":60000}`,
		`{"id":"a","id":"b"}`,
		`{"ID":"a"}`,
		`{"id":"a"} {}`,
		`{"id":"a",}`,
		`{"id":"\u0061","message":null}`,
		`{"\u0069d":"a"}`,
		`{"id":"a","waitMs":1.5}`,
		`{"id":"a","waitMs":01}`,
		`{"id":"a","waitMs":"1"}`,
		`{"id":"a","message":"\ud800"}`,
		`{"id":"a","message":"` + "\x01" + `"}`,
		`{"id":{"x":1}}`,
		`{"unread":true,"limit":-1,"rootSessionID":"r"}`,
		`[]`,
		``,
		`{}`,
		"{\"id\":\"a\xffb\"}",
	} {
		f.Add([]byte(s))
	}
	decoders := [][2]func([]byte) (any, error){
		decoders[RegisterRequest](), decoders[StartRequest](), decoders[ProgressRequest](),
		decoders[CompleteRequest](), decoders[ReadRequest](), decoders[ListRequest](),
		decoders[NotificationsRequest](), decoders[AckRequest](), decoders[CompactRequest](),
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, d := range decoders {
			v, err := d[0](body)
			want, werr := d[1](body)
			if fmt.Sprint(err) != fmt.Sprint(werr) || !reflect.DeepEqual(v, want) {
				t.Fatalf("body %q: decode gives %#v, %v; decodeStrict %#v, %v", body, v, err, want, werr)
			}
		}
	})
}

// decoders returns decode and decodeStrict for requests of type T.
func decoders[T any]() [2]func([]byte) (any, error) {
	fields := jsonFields(reflect.TypeFor[T]())
	return [2]func([]byte) (any, error){
		func(b []byte) (any, error) { var v T; err := decode(b, &v, fields); return v, err },
		func(b []byte) (any, error) { var v T; err := decodeStrict(b, &v, fields); return v, err },
	}
}
