//! MySQL's text protocol for statements inside write transactions: each statement's values are
//! written into its SQL text, and the writes of a batch travel together, several statements per
//! round trip.
//!
//! Why not prepared statements there. The writer's statements change shape with every batch
//! (a multi-row `INSERT` of 37 rows is another text than one of 38), so every batch prepared new
//! statements and sqlx's per-connection statement cache kept evicting. An eviction sends
//! `COM_STMT_CLOSE`, which the server never answers, right before the next command. sqlx does not
//! set `TCP_NODELAY`, so over TCP the kernel held that next command back (Nagle's algorithm)
//! until the close was acknowledged, and MariaDB acknowledges a packet it has nothing to answer
//! to only when its 40 ms delayed-ACK timer fires: the writer, and with it every registration of
//! the event, stalled about 45 ms at a time (see docs/benchmarks.md). Over the text protocol
//! every command gets an answer before the next one is sent, nothing is prepared or closed, and a
//! batch needs three round trips (`START TRANSACTION` with the row locks, the writes, `COMMIT`;
//! see `begin_with`) instead of about fifteen.
//!
//! Values cannot change a statement's meaning: integers are written in decimal, and text either
//! quoted (`'…'`, each quote doubled) or as a hexadecimal literal with its character set
//! (`_utf8mb4 X'…'`). Text is quoted only when it holds no backslash and no control character:
//! such a literal means the same whatever the session's `sql_mode` (only a backslash is read
//! differently under `NO_BACKSLASH_ESCAPES`, and `ANSI_QUOTES` changes double quotes, not single
//! ones), and in UTF-8 no byte of a multi-byte character is a quote or a backslash. Any other
//! text goes as hex, which means the same in every mode and cannot contain a quote. Quoting is
//! the common case (names, e-mail addresses, most JSON): half the bytes of hex to write, send and
//! parse (`docs/benchmarks.md`, "Where MariaDB's CPU per admission goes").
//!
//! A quoted literal is read in the connection's character set, which is utf8mb4 on every
//! connection of the store: `connect_mysql` sets it whatever the URL says. It carries no
//! `_utf8mb4` introducer of its own: MariaDB looks an introducer's character set up by name for
//! every literal, and the introducers were 8–15 % of its CPU per registration row
//! (`benches/mariadb_row_cost.py`, `kuota-0011` against `kuota-bare`; docs/benchmarks.md). A hex
//! literal keeps its introducer: without one it would be a binary string.

use sqlx::mysql::MySqlConnection;
use sqlx::{AssertSqlSafe, Either, Executor};

use crate::store::backend::{RowAccess, Statement, Value, next_item, next_within};
use crate::words::{bytes_below, bytes_equal};

/// SQL text sent in one round trip, at most (a single longer statement goes alone). MariaDB's
/// and MySQL's default `max_allowed_packet` is 16 MiB and 64 MiB; this stays far below both.
pub(crate) const ROUND_TRIP_BYTES_MAX: usize = 4 << 20;

/// The two lower-case hexadecimal digits of every byte.
const HEX_PAIRS: [[u8; 2]; 256] = {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut pairs = [[0u8; 2]; 256];
    let mut byte = 0;
    while byte < 256 {
        pairs[byte] = [DIGITS[byte >> 4], DIGITS[byte & 0x0f]];
        byte += 1;
    }
    pairs
};

/// Appends `statement` to `out` with every `?` replaced by its value.
///
/// Fails if the statement has not exactly one value per `?`: a bug in the statement's builder.
/// The statements built in this crate never hold a `?` other than placeholders (no string
/// literals, no comments).
///
/// The text is built as bytes, every piece of it ASCII or a `&str`, and checked to be UTF-8
/// once, when it is sent (`sql_text`): the writer renders a few hundred bytes of text per
/// admission, and a `String` would check each piece as it is appended.
pub(crate) fn render(statement: &Statement<'_>, out: &mut Vec<u8>) -> Result<(), sqlx::Error> {
    if let Some(literal) = &statement.literal {
        if !statement.sql.is_empty() || !statement.values.is_empty() {
            return Err(sqlx::Error::InvalidArgument(format!(
                "a statement with its values written in has bound ones too: {:.120}",
                String::from_utf8_lossy(literal)
            )));
        }
        out.extend_from_slice(literal);
        return Ok(());
    }
    // Room for the whole statement at once: grown as it is written, a batch's text was copied
    // over and over as its buffer doubled.
    out.reserve(rendered_bytes(statement));
    let mut values = statement.values.iter();
    let sql = statement.sql.as_bytes();
    let mut start = 0;
    for (position, byte) in sql.iter().enumerate() {
        if *byte == b'?' {
            out.extend_from_slice(&sql[start..position]);
            start = position + 1;
            let value = values.next().ok_or_else(|| placeholder_mismatch(statement))?;
            push_literal(out, *value);
        }
    }
    out.extend_from_slice(&sql[start..]);
    if values.next().is_some() {
        return Err(placeholder_mismatch(statement));
    }
    Ok(())
}

/// The bytes `render` writes for `statement`, at most.
fn rendered_bytes(statement: &Statement<'_>) -> usize {
    let values: usize = statement
        .values
        .iter()
        .map(|value| match value {
            // A sign and 19 digits.
            Value::Int(_) => 20,
            Value::Null => 4,
            Value::Text(text) => LITERAL_FRAME_BYTES + 2 * text.len(),
            Value::Utf8(bytes) => LITERAL_FRAME_BYTES + 2 * bytes.len(),
        })
        .sum();
    statement.sql.len() + values
}

/// What a text literal adds to its digits: `_utf8mb4 X'` and the closing quote. A quoted
/// literal stays within the same bound: its two quotes, and at most one more byte per byte of
/// text (a doubled quote).
const LITERAL_FRAME_BYTES: usize = 12;

/// The SQL text `render` built, as the `String` sqlx sends.
fn sql_text(bytes: Vec<u8>) -> Result<String, sqlx::Error> {
    String::from_utf8(bytes)
        .map_err(|_| sqlx::Error::InvalidArgument("a rendered statement is not UTF-8".to_owned()))
}

fn placeholder_mismatch(statement: &Statement<'_>) -> sqlx::Error {
    let placeholders = statement.sql.matches('?').count();
    sqlx::Error::InvalidArgument(format!(
        "a statement has {placeholders} placeholders and {} values: {:.120}",
        statement.values.len(),
        statement.sql
    ))
}

/// Appends `value` as a literal (see the module documentation).
pub(crate) fn push_literal(out: &mut Vec<u8>, value: Value<'_>) {
    match value {
        // Through `itoa`, not `format!`: the formatting machinery costs several times more per
        // integer, and a batch writes thousands.
        Value::Int(number) => out.extend_from_slice(itoa::Buffer::new().format(number).as_bytes()),
        Value::Null => out.extend_from_slice(b"NULL"),
        Value::Text(text) => push_text(out, text.as_bytes()),
        Value::Utf8(bytes) => push_text(out, bytes),
    }
}

/// Appends UTF-8 `text` as a quoted literal if it may be one (`quoting`), else as hex.
fn push_text(out: &mut Vec<u8>, text: &[u8]) {
    match quoting(text) {
        Quoting::Plain => {
            out.push(b'\'');
            out.extend_from_slice(text);
            out.push(b'\'');
        }
        Quoting::Quotes => {
            out.push(b'\'');
            let mut rest = text;
            while let Some(position) = rest.iter().position(|byte| *byte == b'\'') {
                out.extend_from_slice(&rest[..=position]);
                out.push(b'\'');
                rest = &rest[position + 1..];
            }
            out.extend_from_slice(rest);
            out.push(b'\'');
        }
        Quoting::Hex => {
            out.extend_from_slice(b"_utf8mb4 X'");
            // Two digits per byte from a table, straight into the text: through the hex crate a
            // chunk at a time (a zeroed buffer, its UTF-8 check) this was most of the rendering.
            for byte in text {
                out.extend_from_slice(&HEX_PAIRS[usize::from(*byte)]);
            }
            out.push(b'\'');
        }
    }
}

/// How a text is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Quoting {
    /// Quoted as it is.
    Plain,
    /// Quoted, each quote doubled.
    Quotes,
    /// As hex: it holds a backslash or a control character.
    Hex,
}

/// How `text` is written. A quoted literal reads the same in every `sql_mode` when it holds no
/// backslash (an escape unless `NO_BACKSLASH_ESCAPES`) and no control character (a NUL would end
/// the statement for some parsers; the others are left to hex for plainness); a quote in it is
/// doubled. Eight bytes at a time, never stopping early: nearly every text is plain, and this
/// is most of what writing a row's values costs the writer (a byte at a time, about five
/// instructions per byte; callgrind). Most texts are short (a code, a status, an e-mail), so a
/// text's last bytes are a word of their own too, overlapping the one before: a byte checked
/// twice decides the same.
fn quoting(text: &[u8]) -> Quoting {
    let (mut hex, mut quote) = (0, 0);
    let mut check = |word: u64| {
        hex |= bytes_below(word, 0x20) | bytes_equal(word, 0x7f) | bytes_equal(word, b'\\');
        quote |= bytes_equal(word, b'\'');
    };
    let (words, rest) = text.as_chunks::<8>();
    for word in words {
        check(u64::from_le_bytes(*word));
    }
    if !rest.is_empty() {
        if let Some(last) = text.last_chunk::<8>() {
            check(u64::from_le_bytes(*last));
        } else if let (Some(first), Some(last)) = (text.first_chunk::<4>(), text.last_chunk::<4>()) {
            // Four to seven bytes: the first four and the last four.
            check(u64::from(u32::from_le_bytes(*first)) | u64::from(u32::from_le_bytes(*last)) << 32);
        } else {
            // One to three bytes: the first, the middle and the last are all of them; the
            // word's other bytes are a letter, which decides nothing.
            let bytes = [text[0], text[text.len() / 2], text[text.len() - 1], b'a', b'a', b'a', b'a', b'a'];
            check(u64::from_le_bytes(bytes));
        }
    }
    if hex != 0 {
        Quoting::Hex
    } else if quote != 0 {
        Quoting::Quotes
    } else {
        Quoting::Plain
    }
}

/// Runs `statements` in order, as few round trips as `ROUND_TRIP_BYTES_MAX` allows, and returns
/// the rows each matched. The server stops at the first statement that fails and answers with
/// its error; the statements before it stay in the open transaction, which the caller rolls back.
pub(crate) async fn execute_all(
    connection: &mut MySqlConnection,
    statements: &[Statement<'_>],
) -> Result<Vec<u64>, sqlx::Error> {
    let mut matched = Vec::with_capacity(statements.len());
    while matched.len() < statements.len() {
        let rest = &statements[matched.len()..];
        let mut text = Vec::with_capacity(packed_bytes(rest));
        let sent = pack(&mut text, rest)?;
        matched.extend(run(connection, sql_text(text)?, 0, sent, |_| Ok::<(), sqlx::Error>(())).await?);
    }
    Ok(matched)
}

/// Starts a transaction and runs `first` (if any) in the same round trip, streaming its rows
/// into `visit`, followed by as many of `then` as fit in `ROUND_TRIP_BYTES_MAX`; returns the
/// rows each of those matched (fewer than `then` when some did not fit). The server stops at
/// the first failure; either way the caller drops or rolls back what it began.
pub(crate) async fn begin_with<Failure: From<sqlx::Error>>(
    connection: &mut MySqlConnection,
    first: Option<&Statement<'_>>,
    visit: impl FnMut(&dyn RowAccess) -> Result<(), Failure>,
    then: &[Statement<'_>],
) -> Result<Vec<u64>, Failure> {
    // The room for the whole text, `then` the bulk of it, at once: a text started as
    // `START TRANSACTION` alone was moved into a larger buffer when `then` came.
    const BEGIN: &[u8] = b"START TRANSACTION";
    let first_bytes = first.map_or(0, |first| 2 + statement_bytes(first));
    let mut text = Vec::with_capacity(BEGIN.len() + first_bytes + packed_bytes(then));
    text.extend_from_slice(BEGIN);
    let mut leading = 1;
    if let Some(first) = first {
        text.extend_from_slice(b";\n");
        render(first, &mut text)?;
        leading += 1;
    }
    let sent = pack(&mut text, then)?;
    run(connection, sql_text(text)?, leading, sent, visit).await
}

/// Appends statements from the start of `statements` to `text`, separated by `;`, while `text`
/// is below `ROUND_TRIP_BYTES_MAX` (an empty `text` takes one however long); returns how many.
/// The caller makes the room first (`packed_bytes`), when it makes `text`.
fn pack(text: &mut Vec<u8>, statements: &[Statement<'_>]) -> Result<usize, sqlx::Error> {
    let mut packed = 0;
    for statement in statements {
        if !text.is_empty() {
            if text.len() >= ROUND_TRIP_BYTES_MAX {
                break;
            }
            text.extend_from_slice(b";\n");
        }
        render(statement, text)?;
        packed += 1;
    }
    Ok(packed)
}

/// The bytes `pack` appends for `statements`, at most: room for them at once (as far as one
/// round trip goes), where grown as they were appended a batch's text was copied again each
/// time its buffer doubled.
fn packed_bytes(statements: &[Statement<'_>]) -> usize {
    statements
        .iter()
        .map(|statement| statement_bytes(statement) + 2)
        .try_fold(0, |room: usize, bytes| {
            let room = room + bytes;
            if room < ROUND_TRIP_BYTES_MAX { Ok(room) } else { Err(room) }
        })
        .unwrap_or_else(|room| room)
}

/// The bytes `render` writes for `statement`, at most: its text as it is, or `rendered_bytes`.
fn statement_bytes(statement: &Statement<'_>) -> usize {
    statement.literal.as_ref().map_or_else(|| rendered_bytes(statement), Vec::len)
}

/// Sends one text of `leading` statements and then `counted` more, streams the rows it returns
/// into `visit`, and returns the rows each of the `counted` ones matched.
async fn run<Failure: From<sqlx::Error>>(
    connection: &mut MySqlConnection,
    text: String,
    leading: usize,
    counted: usize,
    mut visit: impl FnMut(&dyn RowAccess) -> Result<(), Failure>,
) -> Result<Vec<u64>, Failure> {
    let mut answered = 0;
    let mut matched = Vec::with_capacity(counted);
    let mut results = connection.fetch_many(sqlx::raw_sql(AssertSqlSafe(text)));
    while let Some(result) = next_item(&mut results).await {
        match result? {
            Either::Left(done) => {
                if answered >= leading {
                    matched.push(done.rows_affected());
                }
                answered += 1;
            }
            Either::Right(row) => visit(&row)?,
        }
    }
    let sent = leading + counted;
    if answered != sent {
        return Err(
            sqlx::Error::Protocol(format!("{sent} statements were sent and {answered} answered")).into()
        );
    }
    Ok(matched)
}

/// Streams the rows of one query into `visit`, as `backend`'s prepared variant does.
/// Fails when no row (or the end) comes within `timeout`.
pub(crate) async fn for_each_row<Failure: From<sqlx::Error>>(
    connection: &mut MySqlConnection,
    statement: &Statement<'_>,
    timeout: std::time::Duration,
    mut visit: impl FnMut(&dyn RowAccess) -> Result<(), Failure>,
) -> Result<(), Failure> {
    let mut text = Vec::new();
    render(statement, &mut text)?;
    let mut rows = connection.fetch(sqlx::raw_sql(AssertSqlSafe(sql_text(text)?)));
    while let Some(row) = next_within(&mut rows, timeout).await? {
        visit(&row?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(statement: &Statement<'_>) -> Result<String, sqlx::Error> {
        let mut out = Vec::new();
        render(statement, &mut out)?;
        sql_text(out)
    }

    #[test]
    fn values_replace_the_placeholders_in_order() {
        let statement = Statement::new("UPDATE t SET a = ?, b = ? WHERE c = ?")
            .bind(-42_i64)
            .bind(None::<i64>)
            .bind("x'y");
        assert_eq!(rendered(&statement).unwrap(), "UPDATE t SET a = -42, b = NULL WHERE c = 'x''y'");
    }

    #[test]
    fn quoted_text_doubles_every_quote() {
        let statement = Statement::new("SELECT ?").bind("'O'Brien'; DROP TABLE t; -- ?'");
        assert_eq!(rendered(&statement).unwrap(), "SELECT '''O''Brien''; DROP TABLE t; -- ?'''");
    }

    #[test]
    fn text_with_a_backslash_or_a_control_character_is_written_as_hex() {
        for text in ["a\\b", "a\nb", "a\0b", "a\tb", "a\u{7f}b"] {
            let written = rendered(&Statement::new("SELECT ?").bind(text)).unwrap();
            assert_eq!(written, format!("SELECT _utf8mb4 X'{}'", hex::encode(text)), "{text:?}");
        }
    }

    #[test]
    fn text_is_written_as_hex_so_no_quote_or_backslash_survives() {
        let statement = Statement::new("SELECT ?").bind("é\\'; DROP TABLE t; --");
        let text = rendered(&statement).unwrap();
        assert!(text.starts_with("SELECT _utf8mb4 X'c3a95c27"));
        assert_eq!(text.matches('\'').count(), 2);
        assert!(!text.contains('\\'));
    }

    /// `quoting` against its definition byte by byte, with the one byte that decides at every
    /// place of texts longer than the chunks the compiler checks at once.
    #[test]
    fn a_text_is_quoted_unless_a_byte_of_it_needs_hex() {
        let reference = |text: &[u8]| {
            if text.iter().any(|byte| *byte == b'\\' || *byte < 0x20 || *byte == 0x7f) {
                Quoting::Hex
            } else if text.contains(&b'\'') {
                Quoting::Quotes
            } else {
                Quoting::Plain
            }
        };
        for length in [1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 15, 16, 17, 31, 32, 33, 64, 65] {
            for place in 0..length {
                for byte in 0..=255_u8 {
                    let mut text = vec![b'a'; length];
                    text[place] = byte;
                    assert_eq!(quoting(&text), reference(&text), "{byte:#04x} at {place} of {length}");
                }
            }
        }
        assert_eq!(quoting(b""), Quoting::Plain);
        assert_eq!(quoting("'\\".as_bytes()), Quoting::Hex);
        // Two bytes of any values at any two places of texts of one word and of the lengths
        // read as one word another way: a word is checked as a whole, so a byte must not hide
        // or fake another.
        for length in [2, 3, 5, 8, 9] {
            for first in 0..length {
                for second in first + 1..length {
                    for high in 0..=255_u8 {
                        for low in 0..=255_u8 {
                            let mut text = vec![b'a'; length];
                            (text[first], text[second]) = (low, high);
                            assert_eq!(
                                quoting(&text),
                                reference(&text),
                                "{low:#04x} at {first}, {high:#04x} at {second} of {length}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// A statement written with its values in (`Statement::writing`) is the text that the same
    /// statement bound and rendered is.
    #[test]
    fn values_written_in_are_the_values_rendered() {
        use crate::store::backend::Dialect;
        let values: [Value<'_>; 12] = [
            Value::Int(i64::MIN),
            Value::Null,
            Value::Text("é\u{1}'"),
            Value::Int(i64::MAX),
            Value::Text(""),
            Value::Text("''x''"),
            Value::Text("Zoë O'Brien; -- ? 李小龍 🏃"),
            Value::Text("a\\b"),
            Value::Text("runner1@example.org"),
            Value::Utf8("o'brien@example.org".as_bytes()),
            Value::Utf8("a\\b".as_bytes()),
            Value::Utf8("runner1@example.org".as_bytes()),
        ];
        let mut bound = Statement::new("INSERT INTO t VALUES ");
        let mut written = Statement::writing(Dialect::Mysql, "INSERT INTO t VALUES ");
        for (index, value) in values.into_iter().enumerate() {
            let separator = if index % 3 == 0 { if index == 0 { "(" } else { "), (" } } else { ", " };
            bound.push_sql(separator);
            bound.write_value(value);
            written.push_sql(separator);
            written.write_value(value);
        }
        bound.push_sql(")");
        written.push_sql(")");
        assert!(bound.literal.is_none() && written.values.is_empty());
        assert_eq!(rendered(&written).unwrap(), rendered(&bound).unwrap());
    }

    #[test]
    fn a_statement_with_values_both_written_in_and_bound_is_refused() {
        let mut statement = Statement::writing(crate::store::backend::Dialect::Mysql, "SELECT ");
        statement.write_value("x");
        statement.push_value(1_i64);
        assert!(rendered(&statement).is_err());
    }

    #[test]
    fn the_empty_string_is_an_empty_quoted_literal() {
        assert_eq!(rendered(&Statement::new("SELECT ?").bind("")).unwrap(), "SELECT ''");
    }

    #[test]
    fn long_text_is_encoded_whole() {
        // The backslash at the end sends it as hex.
        let long: String =
            (0..775).map(|index| char::from(b'a' + (index % 26) as u8)).chain(['\\']).collect();
        let text = rendered(&Statement::new("SELECT ?").bind(long.as_str())).unwrap();
        let digits = text.strip_prefix("SELECT _utf8mb4 X'").unwrap().strip_suffix('\'').unwrap();
        assert_eq!(hex::decode(digits).unwrap(), long.as_bytes());
    }

    #[test]
    fn every_byte_is_written_as_the_hex_crate_writes_it() {
        let all: String = (0..=0x7f_u8).map(char::from).chain(['é', '€', '😀']).collect();
        let text = rendered(&Statement::new("SELECT ?").bind(all.as_str())).unwrap();
        assert_eq!(text, format!("SELECT _utf8mb4 X'{}'", hex::encode(all.as_bytes())));
        for byte in 0..=255_u8 {
            assert_eq!(HEX_PAIRS[usize::from(byte)].to_vec(), hex::encode([byte]).into_bytes());
        }
    }

    #[test]
    fn the_room_reserved_holds_the_rendered_statement() {
        let statement = Statement::new("INSERT INTO t VALUES (?, ?, ?), (?, ?, ?)")
            .bind(i64::MIN)
            .bind(None::<i64>)
            .bind("é\u{1}'")
            .bind(u64::MAX as i64)
            .bind("")
            .bind("''x''");
        let text = rendered(&statement).unwrap();
        assert!(text.len() <= rendered_bytes(&statement), "{} > {}", text.len(), rendered_bytes(&statement));
    }

    #[test]
    fn the_room_reserved_holds_the_packed_statements() {
        let bound = Statement::new("UPDATE t SET a = ? WHERE b = ?").bind("x\\'y").bind(-1_i64);
        let mut written = Statement::writing(crate::store::backend::Dialect::Mysql, "INSERT INTO t VALUES ");
        written.write_value("é'\u{1}");
        let statements = [bound, written, Statement::new("SELECT 1")];
        let mut text = Vec::with_capacity(packed_bytes(&statements));
        let room = text.capacity();
        assert_eq!(pack(&mut text, &statements).unwrap(), 3);
        assert!(text.len() <= packed_bytes(&statements), "{} > {}", text.len(), packed_bytes(&statements));
        assert_eq!(text.capacity(), room, "packed into the room made, not into a larger buffer");
        assert_eq!(packed_bytes(&[]), 0);
    }

    #[test]
    fn integers_keep_their_sign_and_extremes() {
        let statement = Statement::new("SELECT ?, ?, ?").bind(i64::MIN).bind(0_i64).bind(i64::MAX);
        assert_eq!(rendered(&statement).unwrap(), format!("SELECT {}, 0, {}", i64::MIN, i64::MAX));
    }

    #[test]
    fn too_few_or_too_many_values_are_refused() {
        assert!(rendered(&Statement::new("SELECT ?, ?").bind(1_i64)).is_err());
        assert!(rendered(&Statement::new("SELECT ?").bind(1_i64).bind(2_i64)).is_err());
    }

    /// Every literal reads back byte for byte from a real MariaDB in each `sql_mode` that
    /// changes how literals are read: quoted ones because they hold nothing a mode reads
    /// differently, hex ones because no mode reads them differently.
    #[tokio::test]
    async fn literals_read_back_byte_for_byte_in_every_sql_mode() {
        use sqlx::{Connection, Row};
        let url =
            std::env::var("KUOTA_TEST_MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into());
        let mut connection = sqlx::MySqlConnection::connect(&url)
            .await
            .expect("the test MariaDB (KUOTA_TEST_MYSQL_URL) answers");
        let texts = [
            "",
            "'",
            "''",
            "Zoë O'Brien; DROP TABLE t; -- ? 李小龍 🏃",
            r#"{"note":"it's \"quoted\"\n"}"#,
            "\\'",
            "\\",
            "'\\'",
            "a\0b\tc\u{7f}",
            "\0",
            "\"double\" `back` %_",
            "a plain text longer than the chunks the check looks at once, with one ' near its end",
            "a plain text longer than the chunks the check looks at once, with one \\ near its end",
            "ünïcödé without a quote: 😀€ and more than thirty-two bytes of it",
        ];
        for mode in ["", "NO_BACKSLASH_ESCAPES", "ANSI_QUOTES,PIPES_AS_CONCAT", "ANSI", "TRADITIONAL"] {
            sqlx::raw_sql(AssertSqlSafe(format!("SET SESSION sql_mode = '{mode}'")))
                .execute(&mut connection)
                .await
                .expect("the mode is set");
            for text in texts {
                let bound = Statement::new("SELECT ?").bind(text);
                let mut written = Statement::writing(crate::store::backend::Dialect::Mysql, "SELECT ");
                written.write_value(text);
                let mut bytes = Statement::writing(crate::store::backend::Dialect::Mysql, "SELECT ");
                bytes.write_value(Value::Utf8(text.as_bytes()));
                for statement in [bound, written, bytes] {
                    let sql = rendered(&statement).unwrap();
                    let row = connection.fetch_one(sqlx::raw_sql(AssertSqlSafe(sql.clone()))).await.unwrap();
                    let read: String = row.try_get(0).unwrap();
                    assert_eq!(read, text, "mode {mode:?}, sent {sql}");
                }
            }
        }
        connection.close().await.unwrap();
    }
}
