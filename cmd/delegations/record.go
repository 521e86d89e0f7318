package main

import (
	"context"
	"flag"
	"fmt"

	"github.com/delegations/delegations/fsm"
)

// applyToID is the body of the verbs that take one delegation id and print
// its record: parse, build the request, call the verb, print.
func applyToID(ctx context.Context, e *env, fs *flag.FlagSet, args []string, request func(id string) (any, error)) error {
	id, err := parseID(e, fs, args)
	if err != nil {
		return err
	}
	req, err := request(id)
	if err != nil {
		return err
	}
	var d fsm.Delegation
	if err := e.call(ctx, req, &d); err != nil {
		return err
	}
	return printRecord(e, d)
}

// call runs the current verb with request req, through the daemon or in
// process, and decodes its answer into resp.
func (e *env) call(ctx context.Context, req, resp any) error {
	be, err := e.connect(ctx)
	if err != nil {
		return err
	}
	return be.Call(ctx, e.verb.name, req, resp)
}

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
