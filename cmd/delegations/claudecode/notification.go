package claudecode

import (
	"strings"
)

// Notification is one <task-notification> Claude Code sends the parent
// session when a background agent stops.
type Notification struct {
	TaskID     string // the agent id
	ToolUseID  string
	OutputFile string
	Status     string // completed, failed, killed, ...
	Summary    string
	Result     string
}

const (
	openTag  = "<task-notification>"
	closeTag = "</task-notification>"
)

// ParseNotifications returns the task notifications in text (a prompt may
// carry several), skipping any without a task id. Claude Code does not
// escape the result, so a result ends at "</result>" followed by the
// <usage> line (else at the first "</result>"), and its notification at
// the first closing tag after that.
func ParseNotifications(text string) []Notification {
	var out []Notification
	for {
		i := strings.Index(text, openTag)
		if i < 0 {
			return out
		}
		text = text[i+len(openTag):]
		head, res, rest := splitResult(text)
		if res == nil {
			j := strings.Index(text, closeTag)
			if j < 0 {
				j = len(text)
			}
			head, rest = text[:j], text[j:]
		}
		end := len(rest)
		if j := strings.Index(rest, closeTag); j >= 0 {
			end = j + len(closeTag)
		}
		n := Notification{
			TaskID:     field(head, "task-id"),
			ToolUseID:  field(head, "tool-use-id"),
			OutputFile: field(head, "output-file"),
			Status:     field(head, "status"),
			Summary:    field(head, "summary"),
		}
		if res != nil {
			n.Result = strings.TrimSpace(*res)
		}
		if n.TaskID != "" {
			out = append(out, n)
		}
		text = rest[end:]
	}
}

// splitResult splits a notification's text into the header before
// <result>, the result (nil when there is none) and what follows it.
func splitResult(text string) (head string, res *string, rest string) {
	i := strings.Index(text, "<result>")
	if c := strings.Index(text, closeTag); i < 0 || c >= 0 && c < i {
		return text, nil, ""
	}
	body := text[i+len("<result>"):]
	j := strings.Index(body, "</result>\n<usage>")
	if j < 0 {
		j = strings.Index(body, "</result>")
	}
	if j < 0 {
		return text[:i], &body, ""
	}
	r := body[:j]
	return text[:i], &r, body[j+len("</result>"):]
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
