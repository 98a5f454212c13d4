import Foundation
import PostgresNIO
import Testing

@testable import ComityStore

@Suite("Migrations", .enabled(if: TestDatabase.isAvailable, "needs COMITY_TEST_PG_URL (run ops/test)"))
struct MigratorTests {
    let logger = TestDatabase.logger

    @Test("a fresh database gets every migration; a second run applies nothing")
    func freshThenRerun() async throws {
        try await TestDatabase.withDatabase(migrate: false) { client, _ in
            let first = try await Migrator(logger: logger).migrate(client)
            #expect(first == Migrator.embedded.map(\.name))
            #expect(!first.isEmpty)
            let second = try await Migrator(logger: logger).migrate(client)
            #expect(second.isEmpty)
            let recorded = try await client.query("select count(*) from schema_migrations", logger: logger).decode(Int64.self).collect()
            #expect(recorded == [Int64(first.count)])
        }
    }

    @Test("an applied migration whose text changed is a hard error naming the file")
    func editedMigrationIsRejected() async throws {
        try await TestDatabase.withDatabase { client, _ in
            var edited = Migrator.embedded
            edited[0].sql += "\n-- an innocent-looking edit\n"
            let error = await #expect(throws: StoreError.self) {
                try await Migrator(migrations: edited, logger: logger).migrate(client)
            }
            #expect(error?.code == .migration)
            #expect(error?.message.contains(Migrator.embedded[0].name) == true)
            #expect(error?.message.contains("edited") == true)
        }
    }

    @Test("a database migrated by a newer binary is refused")
    func unknownAppliedMigration() async throws {
        try await TestDatabase.withDatabase { client, _ in
            try await client.query("insert into schema_migrations (name, checksum) values ('9999_future.sql', 'x')", logger: logger)
            let error = await #expect(throws: StoreError.self) { try await Migrator(logger: logger).migrate(client) }
            #expect(error?.message.contains("9999_future.sql") == true)
        }
    }

    @Test("a failing migration rolls back completely and names the file")
    func failingMigrationRollsBack() async throws {
        try await TestDatabase.withDatabase(migrate: false) { client, _ in
            let broken = Migrator.embedded + [
                .init(name: "9000_broken.sql", sql: "create table half_done (id int);\nselect * from no_such_table;")
            ]
            let error = await #expect(throws: StoreError.self) { try await Migrator(migrations: broken, logger: logger).migrate(client) }
            #expect(error?.message.contains("9000_broken.sql") == true)
            let tables = try await client.query("select count(*) from pg_tables where tablename = 'half_done'", logger: logger)
                .decode(Int64.self).collect()
            #expect(tables == [0])
            let applied = try await client.query("select name from schema_migrations order by name", logger: logger).decode(String.self).collect()
            #expect(applied == Migrator.embedded.map(\.name))
        }
    }

    @Test("concurrent migrators apply each file once")
    func concurrentMigrators() async throws {
        try await TestDatabase.withDatabase(migrate: false) { client, _ in
            let results = try await withThrowingTaskGroup(of: [String].self) { group in
                for _ in 0..<4 { group.addTask { try await Migrator(logger: logger).migrate(client) } }
                return try await group.reduce(into: [[String]]()) { $0.append($1) }
            }
            #expect(results.flatMap { $0 }.sorted() == Migrator.embedded.map(\.name).sorted())
        }
    }
}

@Suite("SQL script splitting")
struct SQLScriptTests {
    @Test func splitsAtTopLevelSemicolonsOnly() {
        let script = """
            -- a comment; with a semicolon
            create table a (x text default 'a;b');
            /* block; comment */ create function f() returns int as $$ select 1; $$ language sql;
            create function g() returns int as $body$ begin return 2; end; $body$ language plpgsql;
            insert into a values ('it''s; fine');
            select "odd;name" from a
            """
        let statements = SQLScript.statements(script)
        #expect(statements.count == 5)
        #expect(statements[0].hasSuffix("default 'a;b')"))
        #expect(statements[1].contains("$$ select 1; $$"))
        #expect(statements[2].contains("begin return 2; end;"))
        #expect(statements[3].contains("'it''s; fine'"))
        #expect(statements[4] == "select \"odd;name\" from a")
    }

    @Test func emptyAndCommentOnlyScriptsHaveNoStatements() {
        #expect(SQLScript.statements("").isEmpty)
        #expect(SQLScript.statements("-- nothing here;\n\n").isEmpty)
    }
}
