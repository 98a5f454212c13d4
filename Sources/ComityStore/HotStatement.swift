import Logging
import PostgresNIO

/// A statement on the agents' hot path (start, end, heartbeat, pull), run as a named prepared statement: PostgreSQL
/// parses and plans it once per connection instead of on every call. Planning the start statement alone took longer
/// than running it (0.75 ms against 0.87 ms, `EXPLAIN ANALYZE` on the benchmark's database).
///
/// A conforming type names one statement; its ``sql`` is the text that the statement's query builder produces (with
/// any values, since values become bindings), so the SQL is written once, with the same interpolation as every other
/// query. Interpolated values must keep their PostgreSQL type from call to call: a `nil` is sent untyped, so every
/// optional value is cast in the SQL (`\(value)::text`), and PostgreSQL infers the same type the value has when it is
/// not `nil`.
package protocol HotStatement {
    static var sql: String { get }
}

/// The prepared form of a ``HotStatement``: rows come back undecoded, as with `query`.
struct Prepared<Statement: HotStatement>: PostgresPreparedStatement {
    typealias Row = PostgresRow
    static var name: String { "comity.\(Statement.self)" }
    static var sql: String { Statement.sql }

    let binds: PostgresBindings

    init(_ query: PostgresQuery) {
        assert(query.sql == Statement.sql, "\(Statement.self): the query's text differs from the prepared text")
        binds = query.binds
    }

    func makeBindings() throws -> PostgresBindings { binds }
    func decodeRow(_ row: PostgresRow) throws -> PostgresRow { row }
}

extension Store {
    /// Runs `query` (built by `statement`'s builder) as `statement`'s prepared statement, on `connection` or a pooled one.
    func run<Statement: HotStatement>(
        _ statement: Statement.Type, _ query: PostgresQuery, on connection: PostgresConnection? = nil
    ) async throws -> [PostgresRow] {
        var rows: [PostgresRow] = []
        if let connection {
            for try await row in try await connection.execute(Prepared<Statement>(query), logger: logger) { rows.append(row) }
        } else {
            for try await row in try await client.execute(Prepared<Statement>(query), logger: logger) { rows.append(row) }
        }
        return rows
    }

    /// Runs `statement`, which has no values, on `connection`.
    func run<Statement: HotStatement>(_ statement: Statement.Type, on connection: PostgresConnection) async throws -> [PostgresRow] {
        try await run(statement, PostgresQuery(unsafeSQL: Statement.sql), on: connection)
    }
}

/// Reads a row's cells in order, each decoded on its own. For hot rows with many columns: PostgresNIO's decode of a
/// whole tuple (`row.decode((A, B, …).self)`) resolves the tuple's type in the Swift runtime on every call.
struct Cells {
    private var iterator: PostgresRow.Iterator

    init(_ row: PostgresRow) { iterator = row.makeIterator() }

    mutating func next<T: PostgresDecodable>(_: T.Type) throws -> T {
        guard let cell = iterator.next() else { throw StoreError(.database, "a row has fewer columns than its query selects") }
        return try cell.decode(T.self)
    }
}
