package api

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

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
		// A wait of up to a day is valid; end it rather than stall.
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		_, err := svc.call(ctx, verb, bytes.NewReader(body))
		if errors.Is(err, context.DeadlineExceeded) && (verb == "read" || verb == "notifications") {
			return
		}
		if err != nil && statusOf(Code(err)) >= 500 {
			t.Fatalf("%s %q: server-side error %v (code %s)", verb, body, err, Code(err))
		}
	})
}
