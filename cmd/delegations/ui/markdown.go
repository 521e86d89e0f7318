package ui

import (
	"html"
	"html/template"
	"strconv"
	"strings"
)

// Markdown renders a small subset of markdown safely: headings (#),
// fenced code blocks (```), bullet lists (- or *), paragraphs, **bold**
// and `code`. Every character of the text is escaped first; the only tags
// in the output are the ones this function writes, so an artifact can
// never inject HTML (a <script> in it is shown as text).
func Markdown(src string) template.HTML {
	var b strings.Builder
	lines := strings.Split(strings.ReplaceAll(src, "\r\n", "\n"), "\n")
	var para []string
	inList := false
	flush := func() {
		if len(para) > 0 {
			b.WriteString("<p>")
			for i, l := range para {
				if i > 0 {
					b.WriteString("<br>\n") // the artifact's header lines are one per line
				}
				b.WriteString(inline(l))
			}
			b.WriteString("</p>\n")
			para = nil
		}
		if inList {
			b.WriteString("</ul>\n")
			inList = false
		}
	}
	for i := 0; i < len(lines); i++ {
		line := lines[i]
		trimmed := strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(trimmed, "```"):
			flush()
			b.WriteString("<pre><code>")
			for i++; i < len(lines) && !strings.HasPrefix(strings.TrimSpace(lines[i]), "```"); i++ {
				b.WriteString(html.EscapeString(lines[i]))
				b.WriteByte('\n')
			}
			b.WriteString("</code></pre>\n")
		case trimmed == "":
			flush()
		case heading(trimmed) > 0:
			flush()
			n := heading(trimmed)
			tag := "h" + strconv.Itoa(min(n+1, 6)) // the page has its own h1
			b.WriteString("<" + tag + ">" + inline(strings.TrimSpace(trimmed[n:])) + "</" + tag + ">\n")
		case strings.HasPrefix(trimmed, "- ") || strings.HasPrefix(trimmed, "* "):
			if len(para) > 0 {
				flush()
			}
			if !inList {
				b.WriteString("<ul>\n")
				inList = true
			}
			b.WriteString("<li>" + inline(trimmed[2:]) + "</li>\n")
		default:
			if inList {
				flush()
			}
			para = append(para, line)
		}
	}
	flush()
	return template.HTML(b.String())
}

// heading returns the level of a markdown heading line, or 0.
func heading(line string) int {
	n := 0
	for n < len(line) && line[n] == '#' {
		n++
	}
	if n == 0 || n > 6 || n >= len(line) || line[n] != ' ' {
		return 0
	}
	return n
}

// inline escapes s and renders `code` and **bold** in it.
func inline(s string) string {
	var b strings.Builder
	parts := strings.Split(s, "`")
	for i, p := range parts {
		if i%2 == 1 && i < len(parts)-1 {
			b.WriteString("<code>" + html.EscapeString(p) + "</code>")
			continue
		}
		if i%2 == 1 {
			b.WriteString("`")
		}
		b.WriteString(bold(html.EscapeString(p)))
	}
	return b.String()
}

// bold renders **x** pairs in already escaped text.
func bold(s string) string {
	parts := strings.Split(s, "**")
	if len(parts) < 3 {
		return s
	}
	var b strings.Builder
	for i, p := range parts {
		switch {
		case i == 0:
		case i%2 == 1 && i < len(parts)-1:
			b.WriteString("<strong>")
		case i%2 == 0:
			b.WriteString("</strong>")
		default:
			b.WriteString("**")
		}
		b.WriteString(p)
	}
	return b.String()
}
