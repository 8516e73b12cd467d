package client

// The reasons of Usher's refusals, as Error.Reason holds them, grouped by
// the code they come with (README, "Errors"). A new reason may be added to
// a code; treat one you do not know as the code alone.

// InvalidArgument.
const (
	ReasonInvalidField         = "INVALID_FIELD"         // malformed, out of range, missing
	ReasonUndeclaredPermission = "UNDECLARED_PERMISSION" // not in the catalog
	ReasonPermissionInUse      = "PERMISSION_IN_USE"     // a policy drops a permission still named
)

// NotFound.
const (
	ReasonNotFound              = "NOT_FOUND"
	ReasonResourceNotFound      = "RESOURCE_NOT_FOUND"
	ReasonRoleNotFound          = "ROLE_NOT_FOUND" // not visible at that scope
	ReasonGrantNotFound         = "GRANT_NOT_FOUND"
	ReasonBlockNotFound         = "BLOCK_NOT_FOUND"
	ReasonQuotaNotFound         = "QUOTA_NOT_FOUND"
	ReasonAdmissionRuleNotFound = "ADMISSION_RULE_NOT_FOUND"
	ReasonSessionNotFound       = "SESSION_NOT_FOUND"
	ReasonKnockNotFound         = "KNOCK_NOT_FOUND" // not waiting in the lobby
)

// FailedPrecondition.
const (
	ReasonFailedPrecondition = "FAILED_PRECONDITION"
	ReasonCycle              = "CYCLE"
	ReasonHasChildren        = "HAS_CHILDREN"
	ReasonMaxHolders         = "MAX_HOLDERS"
	ReasonNotBindable        = "NOT_BINDABLE" // outside the role's bindable_on
	ReasonRoleInUse          = "ROLE_IN_USE"
	ReasonCreatorRole        = "CREATOR_ROLE_NOT_GRANTABLE"
	ReasonRevisionNotReached = "REVISION_NOT_REACHED" // a read's MinRevision
	ReasonPageTokenExpired   = "PAGE_TOKEN_EXPIRED"
	ReasonNoAdmissionRule    = "NO_ADMISSION_RULE"
	ReasonNoLobby            = "NO_LOBBY"
	ReasonSubjectBlocked     = "SUBJECT_BLOCKED" // an Admit of a subject a block keeps out of the call
)

// ResourceExhausted.
const (
	ReasonLimitExceeded        = "LIMIT_EXCEEDED" // a fixed limit
	ReasonMaxDepth             = "MAX_DEPTH"      // the tree would grow deeper than it may
	ReasonQuotaExceeded        = "QUOTA_EXCEEDED"
	ReasonSessionLimit         = "SESSION_LIMIT"          // the server holds as many sessions and knocks as it may
	ReasonCallerSessionLimit   = "CALLER_SESSION_LIMIT"   // the caller holds its share of them
	ReasonWatchLimit           = "WATCH_LIMIT"            // the server holds as many Watch streams as it may
	ReasonCallerWatchLimit     = "CALLER_WATCH_LIMIT"     // the caller holds its share of them
	ReasonCallerInitialLimit   = "CALLER_INITIAL_LIMIT"   // the caller's WatchCall streams hold its share of the events of initial states not yet taken
	ReasonInitialRate          = "INITIAL_RATE"           // the server's WatchCall streams have started as many events of whole initial states a second as it reads; retry_after says when to watch again
	ReasonCallerInitialRate    = "CALLER_INITIAL_RATE"    // the caller's have started its share of them
	ReasonConnectionWatchLimit = "CONNECTION_WATCH_LIMIT" // the connection holds its share of the health Watch streams
	ReasonWatchFellBehind      = "WATCH_FELL_BEHIND"      // a WatchCall stream that did not keep up
	ReasonSendBudget           = "SEND_BUDGET"            // answers their clients have not read hold the server's send budget
	ReasonBackupLimit          = "BACKUP_LIMIT"           // the server has as many backups in progress as it takes
	ReasonBackupNoRoom         = "BACKUP_NO_ROOM"         // a backup's copy would leave the server's data file too little room on its disk
	ReasonWaitLimit            = "WAIT_LIMIT"             // reads waiting for their min_revision hold as many bytes, their requests and calls, as they may
	ReasonCallerWaitLimit      = "CALLER_WAIT_LIMIT"      // the caller's reads waiting for their min_revision hold its share of them
	ReasonReflectionLimit      = "REFLECTION_LIMIT"       // the server holds as many server reflection streams as it may
	// ReasonConnectionReflectionLimit: the connection holds its share of
	// the server reflection streams.
	ReasonConnectionReflectionLimit = "CONNECTION_REFLECTION_LIMIT"
)

// PermissionDenied: one reason per delegation rule, and the caller's kind.
const (
	ReasonPermissionDenied  = "PERMISSION_DENIED"
	ReasonNoEscalation      = "NO_ESCALATION"
	ReasonNoOverreach       = "NO_OVERREACH"
	ReasonNoSelfService     = "NO_SELF_SERVICE"
	ReasonMissingPermission = "MISSING_PERMISSION"
	ReasonNotAssignable     = "NOT_ASSIGNABLE"
	ReasonPlatformOnly      = "PLATFORM_ONLY"
	ReasonCallerKind        = "CALLER_KIND" // a check caller outside its services, or writing on its own authority
)

// Unauthenticated.
const (
	ReasonNoCredentials          = "NO_CREDENTIALS"
	ReasonMalformedAuthorization = "MALFORMED_AUTHORIZATION"
	ReasonBadToken               = "BAD_TOKEN"
	ReasonUnknownCertificate     = "UNKNOWN_CERTIFICATE"
	ReasonExpiredCertificate     = "EXPIRED_CERTIFICATE"   // a client certificate expired since its connection opened
	ReasonUntrustedCertificate   = "UNTRUSTED_CERTIFICATE" // the CA that verified a client certificate left the client CA file since its connection opened
)

// Unavailable.
const (
	ReasonUnavailable             = "UNAVAILABLE"
	ReasonUnavailableStorage      = "UNAVAILABLE_STORAGE"
	ReasonUnavailableSessionStore = "UNAVAILABLE_SESSION_STORE"
	ReasonShuttingDown            = "SHUTTING_DOWN"
)

// OutOfRange: a Watch's after_revision (FUTURE_REVISION also comes with
// FailedPrecondition, for a ListChanges's).
const (
	ReasonCompacted      = "COMPACTED"
	ReasonFutureRevision = "FUTURE_REVISION"
)

// The other codes.
const (
	ReasonAbortedConflicts = "ABORTED_CONFLICTS" // Aborted: try the write again
	ReasonResourceExists   = "RESOURCE_EXISTS"   // AlreadyExists: a create_only PutResource of a registered name
	ReasonUnimplemented    = "UNIMPLEMENTED"     // Unimplemented
	ReasonNoDataFile       = "NO_DATA_FILE"      // Unimplemented: Backup of a server without a data file
	// ReasonCompressedRequest: Unimplemented, a request compressed
	// (grpc-encoding other than identity), refused unread.
	ReasonCompressedRequest = "COMPRESSED_REQUEST"
	ReasonInternal          = "INTERNAL"          // Internal
	ReasonCancelled         = "CANCELLED"         // Canceled, as the server saw it
	ReasonDeadlineExceeded  = "DEADLINE_EXCEEDED" // DeadlineExceeded, as the server saw it
)
