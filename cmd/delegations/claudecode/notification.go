package claudecode

import (
	"strings"
)

// Notification is the <task-notification> Claude Code sends the parent
// session when a background agent stops.
type Notification struct {
	TaskID     string // the agent id
	ToolUseID  string // the Agent tool call that launched it
	OutputFile string
	Status     string // completed, failed, killed, ...
	Summary    string
	Result     string
}

const (
	openTag  = "<task-notification>"
	closeTag = "</task-notification>"
)

// ParseNotification parses text that is one task notification, as Claude
// Code sends it (a notification turn's prompt, a transcript entry): text
// must begin with <task-notification>, and it must have a task id.
//
// Only the outermost notification counts. Claude Code does not escape the
// result, which the agent wrote (and what it read, a web page, a file):
// a result may quote tags, "</result>", even whole notifications. So the
// header fields come from the text before <result> only, and the result
// runs to the last "</result>" followed by the <usage> line (else the last
// "</result>"): nothing inside it is parsed.
func ParseNotification(text string) (Notification, bool) {
	text = strings.TrimSpace(text)
	if !strings.HasPrefix(text, openTag) {
		return Notification{}, false
	}
	text = text[len(openTag):]
	head := text
	var n Notification
	if i := strings.Index(text, "<result>"); i >= 0 && !strings.Contains(text[:i], closeTag) {
		head = text[:i]
		body := text[i+len("<result>"):]
		j := strings.LastIndex(body, "</result>\n<usage>")
		if j < 0 {
			j = strings.LastIndex(body, "</result>")
		}
		if j < 0 {
			j = len(body)
		}
		n.Result = strings.TrimSpace(body[:j])
	} else if c := strings.Index(text, closeTag); c >= 0 {
		head = text[:c]
	}
	n.TaskID = field(head, "task-id")
	n.ToolUseID = field(head, "tool-use-id")
	n.OutputFile = field(head, "output-file")
	n.Status = field(head, "status")
	n.Summary = field(head, "summary")
	return n, n.TaskID != ""
}

// field returns the trimmed text of the first <name>...</name> in head.
func field(head, name string) string {
	open, close := "<"+name+">", "</"+name+">"
	i := strings.Index(head, open)
	if i < 0 {
		return ""
	}
	rest := head[i+len(open):]
	j := strings.Index(rest, close)
	if j < 0 {
		return ""
	}
	return strings.TrimSpace(rest[:j])
}
