package server

import (
	"errors"
	"fmt"
	"io"
	"strconv"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
	"github.com/usher-authz/usher/storage"
)

// backupChunkSize is the most file bytes one BackupResponse carries: well
// under gRPC's 4 MiB message limit, large enough that a big file is few
// messages.
const backupChunkSize = 256 << 10

// MaxBackups is the most Backup streams a server serves at once. Each
// holds a copy of the data file on the server's disk, beside the data
// file, until its stream ends, and a client that stops reading ends it only
// at its deadline: without a bound, a client that opened backups by the
// hundred would fill that disk, and the first commit it could not hold
// would stop every write until a restart.
const MaxBackups = 2

// BackupSource is what AdminService.Backup copies; bolt.Store is one.
type BackupSource interface {
	// Backup writes a consistent copy of the data to w and returns its
	// manifest, calling begin with the manifest before the first byte.
	Backup(w io.Writer, begin func(storage.Manifest) error) (storage.Manifest, error)
}

// WithBackup lets AdminService.Backup stream copies of src; without it,
// Backup answers UNIMPLEMENTED. It is a grpc.ServerOption so that New's
// signature stays that of grpc.NewServer; New takes it out of the options.
func WithBackup(src BackupSource) grpc.ServerOption {
	return backupOption{src: src}
}

// backupOption carries a BackupSource through New's options.
type backupOption struct {
	grpc.EmptyServerOption
	src BackupSource
}

// backupSource finds the BackupSource among opts, if any.
func backupSource(opts []grpc.ServerOption) BackupSource {
	for _, o := range opts {
		if b, ok := o.(backupOption); ok {
			return b.src
		}
	}
	return nil
}

// Backup streams the copy: a first message with its manifest, then its
// bytes. A client that goes away ends the copy, and with it the copy's
// claim on the server's disk.
func (s *adminServer) Backup(_ *usherv1.BackupRequest, stream grpc.ServerStreamingServer[usherv1.BackupResponse]) error {
	src := s.backup
	if src == nil {
		return refuse(codes.Unimplemented, "this server has no data file to back up", details{reason: reasonNoDataFile})
	}
	if n := s.backups.Add(1); n > MaxBackups {
		s.backups.Add(-1)
		return refuse(codes.ResourceExhausted,
			fmt.Sprintf("too many backups in progress: this server takes at most %d at once, each a copy of its data file on its disk; back up again once one has ended", MaxBackups),
			details{reason: reasonBackupLimit, meta: map[string]string{"limit": strconv.Itoa(MaxBackups)},
				why: fmt.Sprintf("this server takes at most %d backups at once", MaxBackups)})
	}
	defer s.backups.Add(-1)
	w := &chunkWriter{stream: stream}
	_, err := src.Backup(w, func(m storage.Manifest) error {
		head := &usherv1.BackupResponse{Revision: uint64(m.Revision), Size: m.Size, Format: m.Format, Sha256: m.SHA256[:]}
		if err := stream.Send(head); err != nil {
			w.sendErr = err
			return err
		}
		return nil
	})
	if err == nil {
		err = w.flush()
	}
	switch {
	case err == nil:
		return nil
	case w.sendErr != nil:
		// The stream broke; its error says how (cancelled, deadline, gone).
		return w.sendErr
	case stream.Context().Err() != nil:
		return status.FromContextError(stream.Context().Err()).Err()
	case errors.Is(err, storage.ErrNoRoom):
		return refuse(codes.ResourceExhausted, fmt.Sprintf("backup: %v", err),
			details{reason: reasonBackupNoRoom, why: "the data file's disk has too little room for a backup's copy"})
	default:
		return refuse(codes.Internal, fmt.Sprintf("backup: %v", err), details{reason: reasonInternal})
	}
}

// chunkWriter sends what is written to it as BackupResponse chunks of at
// most backupChunkSize bytes.
type chunkWriter struct {
	stream  grpc.ServerStreamingServer[usherv1.BackupResponse]
	buf     []byte
	sendErr error
}

func (w *chunkWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		if w.buf == nil {
			w.buf = make([]byte, 0, backupChunkSize)
		}
		k := min(len(p), backupChunkSize-len(w.buf))
		w.buf = append(w.buf, p[:k]...)
		p = p[k:]
		if len(w.buf) == backupChunkSize {
			if err := w.flush(); err != nil {
				return n - len(p), err
			}
		}
	}
	return n, nil
}

// flush sends the buffered bytes. A sent message keeps its buffer, which
// gRPC may still be reading, so the next bytes go to a new one.
func (w *chunkWriter) flush() error {
	if len(w.buf) == 0 {
		return nil
	}
	if err := w.stream.Send(&usherv1.BackupResponse{Chunk: w.buf}); err != nil {
		w.sendErr = err
		return err
	}
	w.buf = nil
	return nil
}
