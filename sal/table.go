package sal

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/roamnet/roam/resolve"
)

// Action is what a Rule does with the services it covers.
type Action uint8

// Actions.
const (
	ActionResolve   Action = iota // ask the Host's resolver
	ActionEndpoints               // use the rule's fixed endpoints
	ActionDrop                    // fail the dial with ErrDropped
)

func (a Action) String() string {
	switch a {
	case ActionResolve:
		return "resolve"
	case ActionEndpoints:
		return "endpoints"
	case ActionDrop:
		return "drop"
	}
	return "Action(" + strconv.Itoa(int(a)) + ")"
}

// Rule tells a Host what to do with the services it covers.
type Rule struct {
	// Service is what the rule covers, in service-ID syntax. A name covers
	// itself and every name below it: "demo" covers "demo", "echo.demo" and
	// "a.echo.demo" (keyed or not), but not "xdemo". An ID with a key label
	// covers only itself. "" (or ".") covers everything, the default route.
	// Rules from ServiceTable hold the canonical form.
	Service string
	// Action is what the rule does; the zero value resolves.
	Action Action
	// Endpoints are the endpoints of an ActionEndpoints rule, which must
	// have at least one; other actions must have none.
	Endpoints []resolve.Endpoint
}

// ServiceTable maps service IDs to rules, for a Host to consult on every
// dial. Services no rule covers are resolved. The zero value is an empty
// table ready to use; it is safe for concurrent use.
type ServiceTable struct {
	mu sync.RWMutex
	// Keyed rules match only the whole ID. Keeping them apart, by
	// ServiceID, means Lookup never builds an ID's text form.
	exact  map[ServiceID]Rule
	suffix map[string]Rule // by name; "" is the default route
}

// Set adds r, replacing any rule for the same service. The table keeps its
// own copy of r.Endpoints. Errors wrap ErrInvalidRule.
func (t *ServiceTable) Set(r Rule) error {
	id, err := ruleKey(r.Service)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidRule, err)
	}
	if err := checkRule(r); err != nil {
		return fmt.Errorf("%w for %q: %w", ErrInvalidRule, r.Service, err)
	}
	r.Service = id.String()
	// Clip too, so that an append to what Lookup returns cannot write
	// into the table.
	r.Endpoints = slices.Clip(slices.Clone(r.Endpoints))

	t.mu.Lock()
	defer t.mu.Unlock()
	if _, keyed := id.Key(); keyed {
		if t.exact == nil {
			t.exact = make(map[ServiceID]Rule)
		}
		t.exact[id] = r
	} else {
		if t.suffix == nil {
			t.suffix = make(map[string]Rule)
		}
		t.suffix[id.name] = r
	}
	return nil
}

// ruleKey parses a rule's service; the zero ID stands for the default route.
func ruleKey(service string) (ServiceID, error) {
	if service == "" || service == "." {
		return ServiceID{}, nil
	}
	return ParseServiceID(service)
}

func checkRule(r Rule) error {
	switch r.Action {
	case ActionEndpoints:
		if len(r.Endpoints) == 0 {
			return errors.New("no endpoints")
		}
	case ActionResolve, ActionDrop:
		if len(r.Endpoints) != 0 {
			return fmt.Errorf("endpoints given for action %v", r.Action)
		}
	default:
		return fmt.Errorf("unknown action %v", r.Action)
	}
	for i, ep := range r.Endpoints {
		switch {
		case !ep.Addr.IsValid():
			return fmt.Errorf("endpoint %d: no address", i)
		case ep.Addr.Port() == 0:
			return fmt.Errorf("endpoint %d (%v): port 0", i, ep)
		case ep.TTL < 0:
			return fmt.Errorf("endpoint %d (%v): negative TTL", i, ep)
		}
	}
	return nil
}

// Delete removes the rule for service, given as to Set, and reports
// whether there was one.
func (t *ServiceTable) Delete(service string) bool {
	id, err := ruleKey(service)
	if err != nil {
		return false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, keyed := id.Key(); keyed {
		_, ok := t.exact[id]
		delete(t.exact, id)
		return ok
	}
	_, ok := t.suffix[id.name]
	delete(t.suffix, id.name)
	return ok
}

// Lookup returns the rule that covers id: the rule for id itself if there
// is one, else the rule for the longest suffix of id's name, label by
// label, else the default route. The returned Endpoints are shared with
// the table: callers must not modify them. The zero ID matches nothing.
func (t *ServiceTable) Lookup(id ServiceID) (Rule, bool) {
	if id.IsZero() {
		return Rule{}, false
	}
	t.mu.RLock()
	defer t.mu.RUnlock()
	if _, keyed := id.Key(); keyed && len(t.exact) > 0 {
		if r, ok := t.exact[id]; ok {
			return r, true
		}
	}
	if len(t.suffix) == 0 {
		return Rule{}, false
	}
	// Substrings of the name are map keys as they are: no allocation.
	for s := id.name; s != ""; {
		if r, ok := t.suffix[s]; ok {
			return r, true
		}
		i := strings.IndexByte(s, '.')
		if i < 0 {
			break
		}
		s = s[i+1:]
	}
	r, ok := t.suffix[""]
	return r, ok
}

// Rules returns copies of all rules, sorted by Service.
func (t *ServiceTable) Rules() []Rule {
	t.mu.RLock()
	rules := make([]Rule, 0, len(t.exact)+len(t.suffix))
	for _, r := range t.exact {
		rules = append(rules, r)
	}
	for _, r := range t.suffix {
		rules = append(rules, r)
	}
	t.mu.RUnlock()
	for i := range rules {
		rules[i].Endpoints = slices.Clone(rules[i].Endpoints)
	}
	slices.SortFunc(rules, func(a, b Rule) int { return strings.Compare(a.Service, b.Service) })
	return rules
}
