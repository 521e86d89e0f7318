package claudecode

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// MaxTranscriptTail is how much of the end of a session's transcript Stop
// reads when it looks for the notifications of agents that ended.
const MaxTranscriptTail = 1 << 20

// ConfigDir is Claude Code's configuration directory: $CLAUDE_CONFIG_DIR,
// else ~/.claude.
func ConfigDir() (string, error) {
	if d := os.Getenv("CLAUDE_CONFIG_DIR"); d != "" {
		return filepath.Abs(d)
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(home, ".claude"), nil
}

// TranscriptNotifications returns the task notifications in the last
// MaxTranscriptTail bytes of a session transcript (JSON lines), oldest
// first. The path comes from the hook's input, so it is read only if it
// is a regular file (not a symlink) under the projects folder of Claude
// Code's configuration directory; an empty path is no notification.
func TranscriptNotifications(path string) ([]Notification, error) {
	if path == "" {
		return nil, nil
	}
	f, err := openTranscript(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil // not written yet, or moved: nothing to find
	}
	if err != nil {
		return nil, fmt.Errorf("transcript: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("transcript: %w", err)
	}
	off := max(fi.Size()-MaxTranscriptTail, 0)
	b, err := io.ReadAll(io.NewSectionReader(f, off, MaxTranscriptTail))
	if err != nil {
		return nil, fmt.Errorf("transcript: %w", err)
	}
	if off > 0 { // the first line is cut
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		} else {
			b = nil
		}
	}
	var out []Notification
	for line := range bytes.Lines(b) {
		if !bytes.Contains(line, []byte("task-notification")) {
			continue
		}
		if n, ok := transcriptNotification(line); ok {
			out = append(out, n)
		}
	}
	return out, nil
}

// MaxTranscriptHead is how much of the start of a session's transcript
// SessionStarted reads at most: its first entries are small, but one may
// hold a pasted image.
const MaxTranscriptHead = 1 << 20

// startLayout is how SessionStarted writes a time: UTC, milliseconds, one
// width for the years it accepts, so that keys sort as their times do.
const startLayout = "2006-01-02T15:04:05.000Z"

// SessionStarted returns when the session of a transcript began: the time
// of the transcript's first entry that has one, in UTC to the millisecond
// in a fixed width, so that later sessions' times sort after earlier
// ones'. Claude Code appends to a transcript, so every hook of a session
// reads the same (Claude Code 2.1.332 in -p mode writes first the queue
// entry of the session's first prompt; a resumed session goes on in its
// transcript). It is "" when the transcript cannot be read under the
// checks of TranscriptNotifications, or its first MaxTranscriptHead bytes
// hold no whole entry with a time of years 2000 to 9999.
func SessionStarted(path string) string {
	if path == "" {
		return ""
	}
	f, err := openTranscript(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	r := bufio.NewReader(io.LimitReader(f, MaxTranscriptHead))
	for {
		// A line cut by the limit, or still being written, is not JSON; a
		// whole entry is, with its newline or not.
		line, err := r.ReadBytes('\n')
		var l struct {
			Timestamp string `json:"timestamp"`
		}
		if bytes.Contains(line, []byte(`"timestamp"`)) && json.Unmarshal(line, &l) == nil && l.Timestamp != "" {
			if t, err := time.Parse(time.RFC3339Nano, l.Timestamp); err == nil {
				if t = t.UTC(); t.Year() >= 2000 && t.Year() <= 9999 {
					return t.Format(startLayout)
				}
			}
		}
		if err != nil {
			return ""
		}
	}
}

// transcriptNotification returns the notification a transcript line
// carries, if it is one of the two entries Claude Code 2.1.332 writes for
// a notification: the queue's enqueue (written when the agent ends, even
// while the parent works) and the user turn delivering it. Text anywhere
// else (a tool's output, a prompt quoting one) is not a notification;
// neither is one inside another's result (see ParseNotification).
func transcriptNotification(line []byte) (Notification, bool) {
	var l struct {
		Type      string          `json:"type"`
		Operation string          `json:"operation"`
		Content   json.RawMessage `json:"content"`
		Origin    struct {
			Kind string `json:"kind"`
		} `json:"origin"`
		Message struct {
			Content json.RawMessage `json:"content"`
		} `json:"message"`
	}
	if json.Unmarshal(line, &l) != nil {
		return Notification{}, false
	}
	var raw json.RawMessage
	switch {
	case l.Type == "queue-operation" && l.Operation == "enqueue":
		raw = l.Content
	case l.Type == "user" && l.Origin.Kind == "task-notification":
		raw = l.Message.Content
	default:
		return Notification{}, false
	}
	var text string
	if json.Unmarshal(raw, &text) != nil {
		return Notification{}, false
	}
	return ParseNotification(text)
}

// openTranscript opens path after checking where it is and what it is.
func openTranscript(path string) (*os.File, error) {
	cfg, err := ConfigDir()
	if err != nil {
		return nil, err
	}
	projects := filepath.Join(cfg, "projects")
	// The folders on the way may be symlinks of the user's (a config
	// directory on another disk): the path may name either side, and what
	// it leads to must still be under what projects leads to.
	realProjects, rerr := filepath.EvalSymlinks(projects)
	abs := filepath.Clean(path)
	if !filepath.IsAbs(abs) || !under(abs, projects) && (rerr != nil || !under(abs, realProjects)) {
		return nil, fmt.Errorf("%s is not under %s", path, projects)
	}
	if rerr != nil {
		return nil, rerr
	}
	realDir, err := filepath.EvalSymlinks(filepath.Dir(abs))
	if err != nil {
		return nil, err
	}
	abs = filepath.Join(realDir, filepath.Base(abs))
	if !under(abs, realProjects) {
		return nil, fmt.Errorf("%s leads out of %s", path, projects)
	}
	// The file is opened beneath the projects folder (os.Root): a folder
	// on the way swapped for a link meanwhile cannot lead out of it.
	root, err := os.OpenRoot(realProjects)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	rel, err := filepath.Rel(realProjects, abs)
	if err != nil {
		return nil, err
	}
	fi, err := root.Lstat(rel)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	f, err := root.OpenFile(rel, os.O_RDONLY|oNoFollow|oNonBlock, 0)
	if err != nil {
		return nil, err
	}
	if fi2, err := f.Stat(); err != nil || !os.SameFile(fi, fi2) {
		f.Close()
		return nil, errors.New(path + " changed while it was opened")
	}
	return f, nil
}

// under reports whether path lies strictly inside dir (both clean).
func under(path, dir string) bool {
	rel, err := filepath.Rel(dir, path)
	return err == nil && rel != "." && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) && !filepath.IsAbs(rel)
}
