import Foundation
import Logging
import Subprocess
import SystemPackage

#if canImport(Glibc)
import Glibc
#endif

/// A private PostgreSQL that `comity-server serve --data-dir DIR` starts and owns when no database URL is given.
///
/// The cluster lives in `DIR/pg` (created with `initdb` on first start, reused afterwards); it listens only on a unix
/// socket inside that folder (no TCP port), trusts local connections, and is stopped when the server stops. When the
/// server runs as root, PostgreSQL runs as the `postgres` user (it refuses root), which then owns `DIR/pg`.
package struct EmbeddedPostgres: Sendable {
    package var dataDirectory: URL
    package var binDirectory: URL
    package var runAsUser: String?
    package var logger: Logger
    package static let user = "comity"
    package static let database = "comity"

    package init(directory: URL, logger: Logger) async throws {
        self.dataDirectory = directory.appending(path: "pg")
        self.binDirectory = try await Self.findBinDirectory()
        self.runAsUser = geteuid() == 0 ? "postgres" : nil
        self.logger = logger
    }

    /// The URL of the embedded database.
    package var url: DatabaseURL {
        DatabaseURL(socketDirectory: dataDirectory.path, user: Self.user, database: Self.database)
    }

    /// Finds PostgreSQL's server programs: `COMITY_PG_BINDIR`, then `pg_config --bindir`, then the newest
    /// `/usr/lib/postgresql/*/bin`.
    package static func findBinDirectory() async throws -> URL {
        let fileManager = FileManager.default
        if let configured = ProcessInfo.processInfo.environment["COMITY_PG_BINDIR"] {
            return URL(fileURLWithPath: configured)
        }
        if let output = try? await run("/usr/bin/env", ["pg_config", "--bindir"]).trimmingCharacters(in: .whitespacesAndNewlines),
            fileManager.fileExists(atPath: output + "/initdb")
        {
            return URL(fileURLWithPath: output)
        }
        let versions = (try? fileManager.contentsOfDirectory(atPath: "/usr/lib/postgresql")) ?? []
        if let newest = versions.compactMap(Int.init).sorted().last {
            return URL(fileURLWithPath: "/usr/lib/postgresql/\(newest)/bin")
        }
        throw StoreError(
            .embedded,
            "PostgreSQL's server programs (initdb, pg_ctl) were not found; install them with `apt-get install postgresql` or set COMITY_PG_BINDIR"
        )
    }

    /// Creates the cluster if needed, starts it unless it already runs, and makes sure the database exists.
    package func start() async throws {
        let fileManager = FileManager.default
        let parent = dataDirectory.deletingLastPathComponent()
        try fileManager.createDirectory(at: parent, withIntermediateDirectories: true)
        let socket = dataDirectory.path + "/.s.PGSQL.5432"
        guard socket.utf8.count < 108 else {
            throw StoreError(.embedded, "the data folder path is too long for a unix socket (\(socket)); use a shorter --data-dir")
        }
        if !fileManager.fileExists(atPath: dataDirectory.appending(path: "PG_VERSION").path) {
            try fileManager.createDirectory(at: dataDirectory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            try prepareOwnership(parent: parent)
            logger.info("initializing embedded database", metadata: ["path": "\(dataDirectory.path)"])
            try await runAsOwner(binDirectory.appending(path: "initdb").path, [
                "-D", dataDirectory.path, "-U", Self.user, "--auth=trust", "-E", "UTF8", "--locale=C",
            ])
        } else {
            try prepareOwnership(parent: parent)
        }
        if (try? await runAsOwner(binDirectory.appending(path: "pg_ctl").path, ["-D", dataDirectory.path, "status"])) != nil {
            logger.info("embedded database already running; reusing it", metadata: ["path": "\(dataDirectory.path)"])
        } else {
            logger.info("starting embedded database", metadata: ["path": "\(dataDirectory.path)"])
            // autovacuum every 10 s: the pass reads attempts_active, which keeps ended attempts' entries until vacuumed.
            let options =
                "-c listen_addresses='' -c unix_socket_directories='\(dataDirectory.path)' -c max_connections=200 -c autovacuum_naptime=10s"
            do {
                try await runAsOwner(binDirectory.appending(path: "pg_ctl").path, [
                    "-D", dataDirectory.path, "-w", "-t", "60", "-l", dataDirectory.appending(path: "postgres.log").path,
                    "-o", options, "start",
                ], daemonizes: true)
            } catch {
                let log = (try? String(contentsOf: dataDirectory.appending(path: "postgres.log"), encoding: .utf8)) ?? ""
                throw StoreError(.embedded, "the embedded database did not start: \(error)\n\(log.suffix(2000))")
            }
        }
        let exists = try await runAsOwner(binDirectory.appending(path: "psql").path, [
            "-h", dataDirectory.path, "-U", Self.user, "-d", "postgres", "-tA", "-c",
            "select 1 from pg_database where datname = '\(Self.database)'",
        ])
        if exists.trimmingCharacters(in: .whitespacesAndNewlines) != "1" {
            try await runAsOwner(binDirectory.appending(path: "psql").path, [
                "-h", dataDirectory.path, "-U", Self.user, "-d", "postgres", "-c", "create database \(Self.database)",
            ])
        }
    }

    /// Stops the cluster (fast shutdown: open transactions roll back, nothing committed is lost).
    package func stop() async {
        logger.info("stopping embedded database", metadata: ["path": "\(dataDirectory.path)"])
        do {
            try await runAsOwner(binDirectory.appending(path: "pg_ctl").path, ["-D", dataDirectory.path, "-m", "fast", "-w", "stop"])
        } catch {
            logger.warning("embedded database did not stop cleanly", metadata: ["error": "\(error)"])
        }
    }

    /// When running as root, hand `DIR/pg` to the `postgres` user and let it reach it through `DIR`.
    private func prepareOwnership(parent: URL) throws {
        guard let runAsUser else { return }
        guard let account = getpwnam(runAsUser) else {
            throw StoreError(.embedded, "running as root, but there is no `\(runAsUser)` user to run PostgreSQL as (PostgreSQL refuses root)")
        }
        let uid = account.pointee.pw_uid
        let gid = account.pointee.pw_gid
        var status = stat()
        if stat(parent.path, &status) == 0, status.st_mode & 0o001 == 0 {
            chmod(parent.path, (status.st_mode & 0o7777) | 0o711)
        }
        guard chown(dataDirectory.path, uid, gid) == 0 else {
            throw StoreError(.embedded, "cannot give \(dataDirectory.path) to the \(runAsUser) user: errno \(errno)")
        }
    }

    @discardableResult
    private func runAsOwner(_ program: String, _ arguments: [String], daemonizes: Bool = false) async throws -> String {
        if let runAsUser {
            return try await Self.run("/usr/sbin/runuser", ["-u", runAsUser, "--", program] + arguments, daemonizes: daemonizes)
        }
        return try await Self.run(program, arguments, daemonizes: daemonizes)
    }

    /// Runs a command and returns its output; throws with the output when it fails.
    ///
    /// - Parameter daemonizes: the command leaves a process running (`pg_ctl start`); its output is discarded (it
    ///   logs to a file) so that no pipe is held open by the daemon.
    @discardableResult
    static func run(_ program: String, _ arguments: [String], daemonizes: Bool = false) async throws -> String {
        let name = URL(fileURLWithPath: program).lastPathComponent
        let status: TerminationStatus
        let output: String
        if daemonizes {
            let result = try await Subprocess.run(
                .path(FilePath(program)), arguments: Arguments(arguments), workingDirectory: FilePath("/"),
                output: .discarded, error: .discarded)
            (status, output) = (result.terminationStatus, "")
        } else {
            let result = try await Subprocess.run(
                .path(FilePath(program)), arguments: Arguments(arguments), workingDirectory: FilePath("/"),
                output: .string(limit: 1 << 20), error: .combinedWithOutput)
            (status, output) = (result.terminationStatus, result.standardOutput)
        }
        guard status.isSuccess else {
            throw StoreError(.embedded, "\(name) \(arguments.first(where: { !$0.hasPrefix("-") }) ?? "") failed (\(status)): \(output.suffix(1500))")
        }
        return output
    }
}
