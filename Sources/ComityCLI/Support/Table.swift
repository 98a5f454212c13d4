/// A plain-text table: an upper-case header row and left-aligned columns separated by two spaces.
///
/// The last column is not padded, so lines carry no trailing spaces.
struct Table {
    var headers: [String]
    var rows: [[String]] = []

    init(_ headers: String...) { self.headers = headers }

    mutating func append(_ cells: String...) { rows.append(cells) }

    mutating func append(row cells: [String]) { rows.append(cells) }

    /// The table as lines, header first.
    func render() -> [String] {
        let all = [headers] + rows
        let columns = all.map(\.count).max() ?? 0
        var widths = [Int](repeating: 0, count: columns)
        for row in all {
            for (index, cell) in row.enumerated() { widths[index] = max(widths[index], cell.count) }
        }
        return all.map { row in
            var line = ""
            for (index, cell) in row.enumerated() {
                let isLast = index == row.count - 1
                line += isLast ? cell : cell + String(repeating: " ", count: widths[index] - cell.count + 2)
            }
            return line
        }
    }

    /// Prints the table to standard output, or `empty` to standard error when there are no rows.
    func print(empty: String) {
        guard !rows.isEmpty else {
            Terminal.err(empty)
            return
        }
        for line in render() { Terminal.out(line) }
    }
}

/// A list of `key  value` lines with the keys aligned, for one object's details.
struct Details {
    private var pairs: [(String, String)] = []

    mutating func append(_ key: String, _ value: String?) { pairs.append((key, value ?? "-")) }

    func render() -> [String] {
        let width = (pairs.map(\.0.count).max() ?? 0) + 2
        return pairs.map { key, value in key + ":" + String(repeating: " ", count: width - key.count - 1) + value }
    }

    func print() {
        for line in render() { Terminal.out(line) }
    }
}
