package projection

import "github.com/delegations/delegations/eventlog"

// ViewsProjector returns the projector that keeps the store's views, for a
// tool that rebuilds them away from the store: replay projects the log
// into a scratch file (eventlog.Scratch) with it and compares the result
// with the live views entry by entry, so that the views' rules are written
// once, here.
func ViewsProjector() eventlog.Projector { return views{} }
