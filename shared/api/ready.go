package api

import (
	"context"
	"net/http"
)

// Ready is the body of a ready /readyz: which server answered and which
// one leads (runs the rollout engine and the other work that must run
// once). With several servers on etcd every server answers the agent and
// admin APIs; Leader is absent while no server leads (an election in
// progress). On bbolt the one server always leads.
type Ready struct {
	Status  string      `json:"status"` // "ready"
	Server  *ServerName `json:"server,omitempty"`
	Leader  *ServerName `json:"leader,omitempty"`
	Leading bool        `json:"leading"`
}

// ServerName names one slipway-server: its host name and the address its
// API listens on.
type ServerName struct {
	Name    string `json:"name"`
	Address string `json:"address"`
}

// Ready asks /readyz which server answers and which one leads; a server
// that is not ready answers an error (503).
func (c *Client) Ready(ctx context.Context) (Ready, error) {
	var out Ready
	_, _, err := c.do(ctx, http.MethodGet, "/readyz", nil, nil, &out)
	return out, err
}
