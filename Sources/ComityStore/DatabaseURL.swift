import Foundation
import Logging
import NIOSSL
import PostgresNIO

/// Where the database is: a `postgres://user:password@host:port/database` URL, or a unix socket
/// (`postgres:///database?host=/path/to/socket-dir&user=comity`).
package struct DatabaseURL: Sendable, CustomStringConvertible {
    package var host: String?
    package var port: Int
    package var socketDirectory: String?
    package var user: String
    package var password: String?
    package var database: String
    package var requireTLS: Bool

    package init(socketDirectory: String, port: Int = 5432, user: String, database: String) {
        self.socketDirectory = socketDirectory
        self.port = port
        self.user = user
        self.database = database
        self.requireTLS = false
    }

    package init(_ text: String) throws {
        guard let components = URLComponents(string: text), ["postgres", "postgresql"].contains(components.scheme ?? "") else {
            throw StoreError(.invalid, "expected a database URL like postgres://user@127.0.0.1:5432/comity, got \(text)", field: "database-url")
        }
        let query = Dictionary((components.queryItems ?? []).map { ($0.name, $0.value ?? "") }, uniquingKeysWith: { $1 })
        self.port = components.port ?? Int(query["port"] ?? "") ?? 5432
        self.user = components.user ?? query["user"] ?? "postgres"
        self.password = components.password ?? query["password"]
        let path = components.path.hasPrefix("/") ? String(components.path.dropFirst()) : components.path
        self.database = path.isEmpty ? (query["dbname"] ?? user) : path
        let host = components.host.flatMap { $0.isEmpty ? nil : $0 } ?? query["host"]
        if let host, host.hasPrefix("/") {
            self.socketDirectory = host
        } else {
            self.host = host ?? "127.0.0.1"
        }
        self.requireTLS = ["require", "verify-ca", "verify-full"].contains(query["sslmode"] ?? "")
    }

    /// The same server, another database.
    package func with(database: String) -> DatabaseURL {
        var copy = self
        copy.database = database
        return copy
    }

    package var description: String {
        if let socketDirectory { return "postgres:///\(database)?host=\(socketDirectory)&user=\(user)" }
        return "postgres://\(user)@\(host ?? "")\(":\(port)")/\(database)"
    }

    /// A pool configuration for PostgresNIO.
    package func clientConfiguration(maxConnections: Int = 16) throws -> PostgresClient.Configuration {
        var configuration: PostgresClient.Configuration
        if let socketDirectory {
            let path = "\(socketDirectory)/.s.PGSQL.\(port)"
            guard path.utf8.count < 108 else {
                throw StoreError(.invalid, "the socket path \(path) is longer than the 107 bytes a unix socket allows; use a shorter data folder")
            }
            configuration = PostgresClient.Configuration(unixSocketPath: path, username: user, password: password, database: database)
        } else {
            configuration = PostgresClient.Configuration(
                host: host ?? "127.0.0.1", port: port, username: user, password: password, database: database,
                tls: requireTLS ? .require(TLSConfiguration.makeClientConfiguration()) : .disable
            )
        }
        configuration.options.maximumConnections = maxConnections
        configuration.options.minimumConnections = 0
        // No JIT compilation: Comity's statements are short, and a cost estimate that grows with the queue (the head
        // of a million queued jobs) made PostgreSQL spend ~200 ms compiling each scheduling pass's head select, which
        // runs in 2 ms without it (docs/performance.md).
        configuration.options.additionalStartupParameters = [("jit", "off")]
        return configuration
    }
}
