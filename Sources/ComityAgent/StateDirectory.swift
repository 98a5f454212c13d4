import ComityAPI
import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The agent's state folder (`--state-dir`), mode 700:
///
/// ```
/// DIR/credential.json          the enrollment answer and server URL (mode 600); its token authenticates every call
/// DIR/running/<attempt>.json   one record per attempt whose processes may be alive (pgid, boot id)
/// DIR/work/<attempt>/          each attempt's working directory; the newest `keptWorkDirectories` finished ones stay
/// ```
package struct StateDirectory: Sendable {
    /// How many finished attempts' work folders are kept for inspection; older ones are deleted.
    package static let keptWorkDirectories = 5

    package var path: String

    package init(path: String) {
        self.path = path.hasSuffix("/") && path.count > 1 ? String(path.dropLast()) : path
    }

    package var credentialPath: String { path + "/credential.json" }
    package var runningPath: String { path + "/running" }
    package var workPath: String { path + "/work" }

    package func workDirectory(attempt: Int64) -> String { "\(workPath)/\(attempt)" }
    package func runningRecordPath(attempt: Int64) -> String { "\(runningPath)/\(attempt).json" }

    /// Creates the folder and its subfolders (mode 700) when missing.
    package func prepare() throws {
        for directory in [path, runningPath, workPath] {
            try FileManager.default.createDirectory(
                atPath: directory,
                withIntermediateDirectories: true,
                attributes: [.posixPermissions: 0o700]
            )
        }
        chmod(path, 0o700)
    }

    /// Creates a fresh, empty work folder for an attempt (a stale one of the same id is removed first).
    package func makeWorkDirectory(attempt: Int64) throws -> String {
        let directory = workDirectory(attempt: attempt)
        if FileManager.default.fileExists(atPath: directory) { try FileManager.default.removeItem(atPath: directory) }
        try FileManager.default.createDirectory(
            atPath: directory,
            withIntermediateDirectories: true,
            attributes: [.posixPermissions: 0o700]
        )
        return directory
    }

    /// Deletes the work folders of finished attempts beyond the newest ``keptWorkDirectories``.
    ///
    /// - Parameter running: attempts still running, whose folders are never touched.
    package func pruneWorkDirectories(keeping running: Set<Int64>) {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: workPath) else { return }
        let finished = names.compactMap(Int64.init).filter { !running.contains($0) }.sorted(by: >)
        for attempt in finished.dropFirst(Self.keptWorkDirectories) {
            try? FileManager.default.removeItem(atPath: workDirectory(attempt: attempt))
        }
    }

    /// Writes `data` to `path` atomically and readable only by the owner (mode 600 from the first byte on).
    package static func writePrivately(_ data: Data, to path: String) throws {
        let temporary = path + ".tmp-\(getpid())"
        let descriptor = open(temporary, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        guard descriptor >= 0 else { throw POSIXFailure(operation: "create \(temporary)", code: errno) }
        fchmod(descriptor, 0o600)
        let written = data.withUnsafeBytes { buffer -> Int in
            var offset = 0
            while offset < buffer.count {
                let result = write(descriptor, buffer.baseAddress! + offset, buffer.count - offset)
                if result < 0 {
                    if errno == EINTR { continue }
                    return -1
                }
                offset += result
            }
            return offset
        }
        let writeError = errno
        fsync(descriptor)
        close(descriptor)
        guard written == data.count else {
            unlink(temporary)
            throw POSIXFailure(operation: "write \(temporary)", code: writeError)
        }
        guard rename(temporary, path) == 0 else {
            let renameError = errno
            unlink(temporary)
            throw POSIXFailure(operation: "rename \(temporary) to \(path)", code: renameError)
        }
    }
}

/// A failed system call, with what was being done.
package struct POSIXFailure: Error, Sendable, CustomStringConvertible {
    package var operation: String
    package var code: Int32

    package var description: String { "cannot \(operation): \(String(cString: strerror(code)))" }
}
