// Package ui is the daemon's status page: a board of every delegation,
// grouped by what needs attention (failed delivery, overdue, unread,
// running, recent), kept live from the log's event tail, and a page per
// delegation with its artifact, its timeline (replay.ReadTimeline) and
// replay's findings about it. It is served on loopback TCP by
// `delegations serve --http ADDR`, as one more actor in the daemon's
// run.Group, over the API's Service.
//
// # Security
//
// A page on loopback is reachable by every web site the user visits (its
// scripts can send requests to 127.0.0.1) and by DNS rebinding, so:
//
//   - only loopback addresses are listened on (Listen refuses others);
//   - the Host header must name the listener (127.0.0.1:PORT,
//     localhost:PORT or [::1]:PORT), which defeats DNS rebinding;
//   - every request needs the daemon's random token: once in the URL
//     (/?token=...), which sets an HttpOnly SameSite=Strict cookie (7
//     days) and redirects to the path without it;
//   - cookies are not isolated by port, so other local web servers'
//     pages are the same site: a read must come from the page itself or
//     the user (Sec-Fetch-Site same-origin or none, or absent), unless it
//     is a top-level navigation;
//   - no CORS headers; a strict Content-Security-Policy (no inline
//     script, nothing from elsewhere), no framing, no referrer to
//     other sites;
//   - reading never writes: the artifact is read from its file, not by the
//     read verb, so looking at a result does not mark it read. The two
//     actions (cancel, deliver again) are POSTs that need, besides the
//     cookie, a CSRF token from the confirmation page's form field, a
//     matching Origin, and are refused cross-site (Sec-Fetch-Site).
//
// # Caveats
//
//   - The board keeps a summary of every delegation in memory (a few
//     hundred bytes each), loaded once from the records view when the
//     daemon starts and kept current from the event tail; a board page
//     costs the filtering and sorting of those summaries plus the rows it
//     shows. The load is one read transaction over the views: on a store
//     of a million delegations it takes about a second, during which a
//     commit that must grow the file waits for it (bbolt remaps only
//     without readers).
//   - Findings come from the delegation's own events (replay.Diagnose),
//     cached until its stream grows and for at most a minute; they leave
//     out what needs the whole log (the views' comparison, the parent's
//     all-complete notification).
package ui
