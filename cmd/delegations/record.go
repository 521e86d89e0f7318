package main

import (
	"flag"
	"fmt"

	"github.com/delegations/delegations/fsm"
)

// parseID parses a verb whose only argument is a delegation id.
func parseID(e *env, fs *flag.FlagSet, args []string) (string, error) {
	rest, err := parse(e, fs, args, 1)
	if err != nil {
		return "", err
	}
	return idArg(rest[0])
}

// printRecord reports the outcome of a lifecycle verb: the record as JSON,
// or "<id> <status>".
func printRecord(e *env, d fsm.Delegation) error {
	if e.json {
		return writeJSON(e.stdout, d)
	}
	_, err := fmt.Fprintf(e.stdout, "%s %s\n", d.ID, d.State)
	return err
}
