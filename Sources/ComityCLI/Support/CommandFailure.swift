/// A failure the CLI detects itself (an unreadable job or token file), with its exit status.
///
/// ``Comity`` prints `message` as the one-line `error:` summary and `details` on the lines after it.
struct CommandFailure: Error, CustomStringConvertible {
    var message: String
    var details: [String] = []
    var exitCode: Int32 = ExitStatus.failure

    var description: String { message }
}

/// The exit statuses of `comity`, a contract for scripts.
enum ExitStatus {
    static let success: Int32 = 0
    /// Any error not listed below (server unreachable, permission denied, rejected request...).
    static let failure: Int32 = 1
    /// Bad command line or a job file that cannot be read or parsed.
    static let usage: Int32 = 2
    /// `submit --wait`: the job ended in a state other than `succeeded`.
    static let jobUnsuccessful: Int32 = 3
    /// The server answered 404 (no such job, or not visible to this token).
    static let notFound: Int32 = 4
}
