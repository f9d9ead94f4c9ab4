package email

import (
	"bytes"
	"strings"

	"golang.org/x/net/html"
)

// HTMLToText reduces an HTML body to readable text: block elements become
// line breaks, links keep their target, scripts and styles are dropped.
func HTMLToText(s string) string {
	z := html.NewTokenizer(strings.NewReader(s))
	// Every step only looks at the end of the output: the work stays
	// linear in the size of the HTML, whatever its tags.
	var out []byte
	skip := 0 // inside <script>, <style>, <head>
	var href string
	endsWith := func(c byte) bool { return len(out) > 0 && out[len(out)-1] == c }
	newline := func(n int) {
		for endsWith(' ') {
			out = out[:len(out)-1]
		}
		if len(out) == 0 {
			return
		}
		have := 0
		for have < n && have < len(out) && out[len(out)-1-have] == '\n' {
			have++
		}
		for ; have < n; have++ {
			out = append(out, '\n')
		}
	}
	for {
		tt := z.Next()
		switch tt {
		case html.ErrorToken:
			return strings.TrimSpace(string(out))
		case html.TextToken:
			if skip > 0 {
				continue
			}
			raw := string(z.Text())
			text := strings.Join(strings.Fields(raw), " ")
			if text == "" {
				if len(out) > 0 && !endsWith('\n') && !endsWith(' ') {
					out = append(out, ' ')
				}
				continue
			}
			if len(out) > 0 && !endsWith('\n') && !endsWith(' ') && strings.TrimLeft(raw, " \t\r\n") != raw {
				out = append(out, ' ')
			}
			out = append(out, text...)
			if strings.TrimRight(raw, " \t\r\n") != raw {
				out = append(out, ' ')
			}
		case html.StartTagToken, html.EndTagToken, html.SelfClosingTagToken:
			name, hasAttr := z.TagName()
			tag := string(name)
			switch tag {
			case "script", "style", "head", "title":
				if tt == html.StartTagToken {
					skip++
				} else if tt == html.EndTagToken && skip > 0 {
					skip--
				}
				continue
			}
			if skip > 0 {
				continue
			}
			switch tag {
			case "br":
				newline(1)
			case "p", "div", "table", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre", "ul", "ol", "hr":
				newline(2)
			case "tr", "li":
				newline(1)
				if tag == "li" && tt == html.StartTagToken {
					out = append(out, "• "...)
				}
			case "td", "th":
				if tt == html.EndTagToken {
					out = append(out, ' ')
				}
			case "a":
				if tt == html.StartTagToken {
					href = ""
					for hasAttr {
						var k, v []byte
						k, v, hasAttr = z.TagAttr()
						if string(k) == "href" {
							href = string(v)
						}
					}
				} else if tt == html.EndTagToken && href != "" {
					if (strings.HasPrefix(href, "http://") || strings.HasPrefix(href, "https://")) && !bytes.Contains(out[max(0, len(out)-len(href)-1):], []byte(href)) {
						out = append(out, " <"+href+">"...)
					}
					href = ""
				}
			}
		}
	}
}
