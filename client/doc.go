// Package client is the Go client internal services call Usher with. New
// dials a server with a bearer token or a client certificate and Usher's
// connection defaults; the generated clients of the three services are on
// the Client, and every error they return is an *Error carrying the
// refusal's details (reason, field, value, violations). Check,
// ListPermissions and Join answer the common questions in one line;
// Session keeps a participant's lease renewed; Watch and WatchCall follow
// a stream across disconnects, resuming from the last revision received.
//
// It imports only the generated usher.v1 package and gRPC: a service that
// calls Usher does not link the engine, bbolt, etcd or LiveKit. It must not
// import any other package of Usher.
package client
