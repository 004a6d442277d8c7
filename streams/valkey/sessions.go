package valkey

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"strings"
	"time"

	"github.com/valkey-io/valkey-go"

	"github.com/footfall/footfall/streams"
)

// A session is stored as "L<expires ms>:<json>" while live and
// "R<expires ms>:<json>" once revoked, until sessionRetention after its
// expiry, so that Session can tell revoked and expired from unknown.

// CreateSession stores s. An id still remembered (even revoked or expired)
// is an error: a revoked session must not come back to life.
func (b *Bus) CreateSession(ctx context.Context, s streams.Session) error {
	if err := b.check(ctx); err != nil {
		return err
	}
	if s.ID == "" {
		return errors.New("valkey: create session: empty id")
	}
	if s.ExpiresAt.IsZero() {
		return errors.New("valkey: create session: zero expiry")
	}
	js, err := json.Marshal(s)
	if err != nil {
		return fmt.Errorf("valkey: create session: %w", err)
	}
	val := "L" + strconv.FormatInt(s.ExpiresAt.UnixMilli(), 10) + ":" + string(js)
	// Kept until sessionRetention after the expiry, by the node's clock.
	keep := max(s.ExpiresAt.Add(sessionRetention).Sub(b.now()), time.Millisecond)
	cmd := b.client.B().Set().Key(sessionKey(s.ID)).Value(val).Nx().Px(keep).Build()
	err = b.client.Do(ctx, cmd).Error()
	switch {
	case valkey.IsValkeyNil(err):
		return errors.New("valkey: create session: id already in use")
	case err != nil:
		return fmt.Errorf("valkey: create session: %w", err)
	}
	return nil
}

// Session returns the live session id, or streams.ErrSessionNotFound,
// ErrSessionRevoked or ErrSessionExpired.
func (b *Bus) Session(ctx context.Context, id string) (streams.Session, error) {
	if err := b.check(ctx); err != nil {
		return streams.Session{}, err
	}
	val, err := b.client.Do(ctx, b.client.B().Get().Key(sessionKey(id)).Build()).ToString()
	switch {
	case valkey.IsValkeyNil(err):
		return streams.Session{}, streams.ErrSessionNotFound
	case err != nil:
		return streams.Session{}, fmt.Errorf("valkey: session: %w", err)
	}
	state, rest := val[:1], val[1:]
	i := strings.IndexByte(rest, ':')
	if i < 0 || (state != "L" && state != "R") {
		return streams.Session{}, errors.New("valkey: session: malformed record")
	}
	expires, err := strconv.ParseInt(rest[:i], 10, 64)
	if err != nil {
		return streams.Session{}, errors.New("valkey: session: malformed record")
	}
	switch {
	case state == "R":
		return streams.Session{}, streams.ErrSessionRevoked
	case b.now().UnixMilli() >= expires:
		return streams.Session{}, streams.ErrSessionExpired
	}
	var s streams.Session
	if err := json.Unmarshal([]byte(rest[i+1:]), &s); err != nil {
		return streams.Session{}, fmt.Errorf("valkey: session: %w", err)
	}
	s.Communities = maps.Clone(s.Communities)
	return s, nil
}

// RevokeSession revokes the live session id and tells every node's
// OnRevoke handlers. A session that is unknown, revoked or expired has
// nothing left to revoke: streams.ErrSessionNotFound.
func (b *Bus) RevokeSession(ctx context.Context, id string) error {
	if err := b.check(ctx); err != nil {
		return err
	}
	n, err := b.s.revoke.exec(ctx, b.client, []string{sessionKey(id)}, []string{
		strconv.FormatInt(b.now().UnixMilli(), 10), chanRevoked, id,
	}).AsInt64()
	switch {
	case err != nil:
		return fmt.Errorf("valkey: revoke session: %w", err)
	case n == 0:
		return streams.ErrSessionNotFound
	}
	return nil
}

// OnRevoke calls h, from the delivery goroutine, with the id of every
// session revoked on any node from now on, until cancel is called. Cancel
// is idempotent and waits for a running call of h. After Close it returns
// a no-op cancel.
//
// Revocations published while this node's connection is down are not
// delivered; OnReconnect tells when to re-check open sessions.
func (b *Bus) OnRevoke(h func(sessionID string)) (cancel func()) {
	if b.closed.Load() || h == nil {
		return func() {}
	}
	return b.revokers.Add(h)
}

// onRevokedMessage is the receive callback of the revocation channel: it
// only queues.
func (b *Bus) onRevokedMessage(m valkey.PubSubMessage) {
	if m.Message != "" {
		b.queue.Push(item{revoked: m.Message})
	}
}
