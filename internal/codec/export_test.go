package codec

// Checked is checked, and Standard grpc-go's codec, for the tests.
var (
	Checked  = checked
	Standard = standard
)
