package resolve_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/roamnet/roam/resolve"
)

func TestErrorString(t *testing.T) {
	tests := []struct {
		err  *resolve.Error
		want string
	}{
		// The package's name leads once: not "resolve resolve web: resolve: not found".
		{&resolve.Error{Op: "resolve", Service: "web", Err: resolve.ErrNotFound}, "resolve web: not found"},
		{&resolve.Error{Op: "resolve", Service: "web", Err: resolve.ErrAllDown}, "resolve web: every endpoint is down"},
		{&resolve.Error{Op: "register", Err: resolve.ErrInvalid}, "resolve register: invalid argument"},
		{&resolve.Error{Op: "register", Service: "web", Err: fmt.Errorf("%w: endpoint address 0.0.0.0:0", resolve.ErrInvalid)}, "resolve register web: invalid argument: endpoint address 0.0.0.0:0"},
		{&resolve.Error{Op: "watch", Service: "db"}, "resolve watch db: <nil>"},
		{&resolve.Error{Op: "resolve", Service: "db", Err: errors.New("link down")}, "resolve db: link down"},
		{nil, "<nil>"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			require.Equal(t, tt.want, tt.err.Error())
		})
	}
}

func TestErrorIsAs(t *testing.T) {
	cause := errors.New("link down")
	tests := []struct {
		name   string
		err    error
		target error
	}{
		{"sentinel", &resolve.Error{Op: "resolve", Service: "a", Err: resolve.ErrNotFound}, resolve.ErrNotFound},
		{"wrapped sentinel", &resolve.Error{Op: "resolve", Service: "a", Err: fmt.Errorf("zone: %w", resolve.ErrNotFound)}, resolve.ErrNotFound},
		{"context", &resolve.Error{Op: "resolve", Service: "a", Err: context.DeadlineExceeded}, context.DeadlineExceeded},
		{"custom cause", fmt.Errorf("dial: %w", &resolve.Error{Op: "resolve", Service: "a", Err: cause}), cause},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.ErrorIs(t, tt.err, tt.target)
			var e *resolve.Error
			require.ErrorAs(t, tt.err, &e)
			require.Equal(t, "a", e.Service)
		})
	}
}

// ErrUnauthenticated stays as the deprecated name of ErrUnsigned, so that
// code written against it still matches.
func TestErrUnauthenticatedIsErrUnsigned(t *testing.T) {
	require.ErrorIs(t, resolve.ErrUnauthenticated, resolve.ErrUnsigned)
}
