import Crypto
import Foundation
import Logging
import PostgresNIO

/// Applies the numbered SQL files of `migrations/` (embedded at build time) in order.
///
/// Each pending file runs in its own transaction, all under one session advisory lock so that concurrent
/// `serve`/`migrate` processes apply each file once. Every applied file is recorded with the SHA-256 of its text;
/// an applied file whose text changed afterwards is a hard error naming the file.
package struct Migrator: Sendable {
    package struct Migration: Sendable, Hashable {
        package var name: String
        package var sql: String
        package var checksum: String { SHA256.hash(data: Data(sql.utf8)).map { String(format: "%02x", $0) }.joined() }

        package init(name: String, sql: String) {
            self.name = name
            self.sql = sql
        }
    }

    /// The migrations this binary carries, ordered by name.
    package static let embedded: [Migration] = EmbeddedMigrations.all.map { Migration(name: $0.name, sql: $0.sql) }
        .sorted { $0.name < $1.name }

    static let lockKey: Int64 = 0x636f_6d69_7479_01  // "comity" + 1

    package var migrations: [Migration]
    package var logger: Logger

    package init(migrations: [Migration] = Migrator.embedded, logger: Logger) {
        self.migrations = migrations
        self.logger = logger
    }

    /// Applies what is pending and returns the names applied now.
    @discardableResult
    package func migrate(_ client: PostgresClient) async throws -> [String] {
        try await client.withConnection { connection in
            try await connection.query("select pg_advisory_lock(\(Self.lockKey))", logger: logger)
            do {
                let applied = try await apply(on: connection)
                try await connection.query("select pg_advisory_unlock(\(Self.lockKey))", logger: logger)
                return applied
            } catch {
                _ = try? await connection.query("rollback", logger: logger)
                _ = try? await connection.query("select pg_advisory_unlock(\(Self.lockKey))", logger: logger)
                throw error
            }
        }
    }

    /// Names of migrations recorded as applied, with their checksums.
    package func applied(_ connection: PostgresConnection) async throws -> [String: String] {
        try await connection.query(
            """
            create table if not exists schema_migrations (
                name text primary key, checksum text not null, applied_at timestamptz not null default now())
            """, logger: logger)
        var recorded: [String: String] = [:]
        for try await (name, checksum) in try await connection.query("select name, checksum from schema_migrations", logger: logger)
            .decode((String, String).self)
        {
            recorded[name] = checksum
        }
        return recorded
    }

    private func apply(on connection: PostgresConnection) async throws -> [String] {
        let recorded = try await applied(connection)
        let known = Set(migrations.map(\.name))
        if let unknown = recorded.keys.sorted().first(where: { !known.contains($0) }) {
            throw StoreError(.migration, "the database has migration \(unknown), which this binary does not know: it is older than the database")
        }
        for migration in migrations {
            if let checksum = recorded[migration.name], checksum != migration.checksum {
                throw StoreError(
                    .migration,
                    "migration \(migration.name) was edited after it was applied (checksum \(checksum.prefix(12)) in the database, \(migration.checksum.prefix(12)) in the file); add a new migration instead"
                )
            }
        }
        var appliedNow: [String] = []
        for migration in migrations where recorded[migration.name] == nil {
            logger.info("applying migration", metadata: ["migration": "\(migration.name)"])
            try await connection.query("begin", logger: logger)
            for statement in SQLScript.statements(migration.sql) {
                do {
                    try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger)
                } catch let error as PSQLError {
                    let message = error.serverInfo?[.message] ?? String(reflecting: error)
                    throw StoreError(.migration, "migration \(migration.name) failed: \(message) in: \(statement.prefix(200))")
                }
            }
            try await connection.query(
                "insert into schema_migrations (name, checksum) values (\(migration.name), \(migration.checksum))", logger: logger)
            try await connection.query("commit", logger: logger)
            appliedNow.append(migration.name)
        }
        return appliedNow
    }
}
