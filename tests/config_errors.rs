//! Every pipeline configuration error, with the exact text a user sees.
//!
//! Each case is `examples/markout.toml` with one change (or the alpha schema with one
//! change), so a failing case shows exactly what the message is about. By topic:
//!
//! * TOML and file structure: syntax, unknown section or key, missing section or key,
//!   wrong value type, reading from a file
//! * `[input]`, `[columns]`, `[time]` (markets, formats, policies), `[[cast]]`,
//!   `[derive]`, `[forward_return]`, `[bin]`, `[aggregate]`
//! * binding to a schema: unknown columns (with a suggestion and the columns available),
//!   unsupported column types
//! * `check_schema`: a later date's file that differs from the first

use arrow::datatypes::{DataType, Field, Schema};
use vizflow::config::{BoundPipeline, Pipeline, Stage};
use vizflow::operators::derive::DeriveSpec;

const MARKOUT: &str = include_str!("../examples/markout.toml");

/// The columns of [`alpha_schema`], as messages list them.
const ALPHA_COLUMNS: &str =
    "ticktime, ukey, orderSide, qty, fillPrice, BidPrice1, AskPrice1, alpha1, alpha2";

/// The reference pipeline with its one occurrence of `from` replaced by `to`.
fn markout_with(from: &str, to: &str) -> String {
    assert_eq!(
        MARKOUT.matches(from).count(),
        1,
        "{from:?} must occur once in markout.toml"
    );
    MARKOUT.replacen(from, to, 1)
}

/// The schema of the generator's alpha files.
fn alpha_schema() -> Schema {
    alpha_schema_with("ticktime", "ticktime", DataType::Int64)
}

/// The alpha schema with column `column` renamed to `name` and of type `data_type`.
fn alpha_schema_with(column: &str, name: &str, data_type: DataType) -> Schema {
    let columns = [
        ("ticktime", DataType::Int64),
        ("ukey", DataType::Int64),
        ("orderSide", DataType::Utf8),
        ("qty", DataType::Float64),
        ("fillPrice", DataType::Float64),
        ("BidPrice1", DataType::Float64),
        ("AskPrice1", DataType::Float64),
        ("alpha1", DataType::Float64),
        ("alpha2", DataType::Float64),
    ];
    assert!(
        columns.iter().any(|(c, _)| *c == column),
        "no column {column}"
    );
    let fields = columns.into_iter().map(|(c, t)| {
        if c == column {
            Field::new(name, data_type.clone(), true)
        } else {
            Field::new(c, t, true)
        }
    });
    Schema::new(fields.collect::<Vec<_>>())
}

fn parse_error(text: &str) -> String {
    Pipeline::from_toml(text)
        .expect_err("the pipeline must not parse")
        .to_string()
}

fn bind_error(text: &str, schema: &Schema) -> String {
    let pipeline = Pipeline::from_toml(text).expect("the pipeline parses");
    pipeline
        .bind(schema)
        .expect_err("the pipeline must not bind")
        .to_string()
}

/// The baseline every case changes one thing of.
#[test]
fn markout_binds_to_the_alpha_schema() {
    let bound = Pipeline::from_toml(MARKOUT)
        .unwrap()
        .bind(&alpha_schema())
        .unwrap();
    assert_eq!(
        bound.read,
        [
            "qty",
            "orderSide",
            "alpha1",
            "ukey",
            "ticktime",
            "AskPrice1",
            "BidPrice1"
        ]
    );
}

// TOML and file structure.

#[test]
fn toml_syntax_error() {
    assert_eq!(
        parse_error(&markout_with("dir = \"data\"", "dir = \"data")),
        "invalid pipeline: TOML parse error at line 8, column 12\n  \
         |\n\
         8 | dir = \"data\n  \
         |            ^\n\
         invalid basic string, expected `\"`"
    );
}

#[test]
fn unknown_section() {
    assert_eq!(
        parse_error(&markout_with("[aggregate]\n", "[aggregat]\n")),
        "invalid pipeline: TOML parse error at line 40, column 2\n   \
         |\n\
         40 | [aggregat]\n   \
         |  ^^^^^^^^\n\
         unknown field `aggregat`, expected one of `input`, `output`, `columns`, `cast`, \
         `derive`, `time`, `forward_return`, `enrich`, `bin`, `aggregate`, `stream`"
    );
}

#[test]
fn unknown_key() {
    assert_eq!(
        parse_error(&markout_with("dir = \"data\"", "dirr = \"data\"")),
        "invalid pipeline: TOML parse error at line 8, column 1\n  \
         |\n\
         8 | dirr = \"data\"\n  \
         | ^^^^\n\
         unknown field `dirr`, expected one of `dir`, `pattern`, `calendar`, `batch_rows`"
    );
}

#[test]
fn missing_section() {
    let time = "[time]\nmarket = \"CN\"\nformat = \"hhmmssmmm\"\nout_of_session = \"clamp\"\n";
    assert_eq!(
        parse_error(&markout_with(time, "")),
        "invalid pipeline: missing section [time]; add it with its required keys, \
         e.g. market = \"CN\""
    );
    assert_eq!(
        parse_error(&markout_with(
            "[input]\ndir = \"data\"\npattern = \"alpha_{date}.feather\"\n",
            ""
        )),
        "invalid pipeline: missing section [input]; add it with its required keys, \
         e.g. dir = \"data\" and pattern = \"alpha_{date}.feather\""
    );
}

#[test]
fn missing_key() {
    assert_eq!(
        parse_error(&markout_with("pattern = \"alpha_{date}.feather\"\n", "")),
        "invalid pipeline: TOML parse error at line 7, column 1\n  \
         |\n\
         7 | [input]\n  \
         | ^^^^^^^\n\
         missing field `pattern`"
    );
}

#[test]
fn value_of_wrong_type() {
    assert_eq!(
        parse_error(&markout_with(
            "horizons = [60, 300, 600]",
            "horizons = \"60\""
        )),
        "invalid pipeline: TOML parse error at line 35, column 12\n   \
         |\n\
         35 | horizons = \"60\"\n   \
         |            ^^^^\n\
         invalid type: string \"60\", expected a sequence"
    );
}

#[test]
fn unreadable_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing.toml");
    assert_eq!(
        Pipeline::from_file(&path).unwrap_err().to_string(),
        format!(
            "cannot read pipeline file {}: No such file or directory (os error 2)",
            path.display()
        )
    );
}

#[test]
fn errors_from_a_file_name_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("markout.toml");
    std::fs::write(
        &path,
        markout_with("horizons = [60, 300, 600]", "horizons = []"),
    )
    .unwrap();
    assert_eq!(
        Pipeline::from_file(&path).unwrap_err().to_string(),
        format!(
            "invalid pipeline {}: [forward_return] horizons: the list is empty; horizons are \
             seconds of trading time, \"close\", \"next_open\" or \"next_close\", e.g. \
             horizons = [60, 300, \"close\"]",
            path.display()
        )
    );
    std::fs::write(&path, markout_with("dir = \"data\"", "dirr = \"data\"")).unwrap();
    let message = Pipeline::from_file(&path).unwrap_err().to_string();
    let first_line = message.lines().next().unwrap();
    assert_eq!(
        first_line,
        format!(
            "invalid pipeline {}: TOML parse error at line 8, column 1",
            path.display()
        )
    );
}

// [input] and [columns].

#[test]
fn pattern_without_date() {
    assert_eq!(
        parse_error(&markout_with("alpha_{date}.feather", "alpha_date.feather")),
        "invalid pipeline: [input] pattern: 'alpha_date.feather' has no {date}; put {date} \
         where the file name has the date (YYYYMMDD), e.g. pattern = \"alpha_{date}.feather\""
    );
}

#[test]
fn batch_rows_not_positive() {
    let pattern = "pattern = \"alpha_{date}.feather\"";
    assert_eq!(
        parse_error(&markout_with(
            pattern,
            &format!("{pattern}\nbatch_rows = 0")
        )),
        "invalid pipeline: TOML parse error at line 10, column 14\n   \
         |\n\
         10 | batch_rows = 0\n   \
         |              ^\n\
         batch_rows must be at least 1, got 0 (the default is 65536)"
    );
    assert_eq!(
        parse_error(&markout_with(
            pattern,
            &format!("{pattern}\nbatch_rows = -1")
        )),
        "invalid pipeline: TOML parse error at line 10, column 14\n   \
         |\n\
         10 | batch_rows = -1\n   \
         |              ^^\n\
         batch_rows must be at least 1, got -1 (the default is 65536)"
    );
}

#[test]
fn columns_without_symbol() {
    assert_eq!(
        parse_error(&markout_with("symbol = \"ukey\"\n", "")),
        "invalid pipeline: [columns] must name the symbol column, e.g. symbol = \"ukey\""
    );
}

#[test]
fn columns_without_timestamp() {
    assert_eq!(
        parse_error(&markout_with("timestamp = \"ticktime\"\n", "")),
        "invalid pipeline: [columns] must name the timestamp column, \
         e.g. timestamp = \"ticktime\" (or set column in [time])"
    );
}

#[test]
fn column_name_not_a_string() {
    assert_eq!(
        parse_error(&markout_with("symbol = \"ukey\"", "symbol = 1")),
        "invalid pipeline: [columns] symbol: expected a string, got integer 1; \
         write it in quotes: symbol = \"1\""
    );
}

// [time]: markets, timestamp formats, out-of-session policies.

/// The pipeline with `market = {market}`.
fn with_market(market: &str) -> String {
    markout_with("market = \"CN\"", &format!("market = {market}"))
}

#[test]
fn unknown_market_preset() {
    assert_eq!(
        parse_error(&with_market("\"NYSE\"")),
        "invalid pipeline: [time] market: unknown market \"NYSE\"; presets are CN, KR, HK, \
         hkex_northbound, JP, US, crypto, or give time_zone and sessions for a custom market"
    );
}

#[test]
fn custom_market_bad_time_zone() {
    assert_eq!(
        parse_error(&with_market(
            "{ time_zone = \"Shanghai\", sessions = [[\"09:30\", \"11:30\"]] }"
        )),
        "invalid pipeline: [time] market: unknown time zone \"Shanghai\" for market \"custom\"; \
         did you mean \"Asia/Shanghai\"?"
    );
}

#[test]
fn custom_market_overlapping_sessions() {
    assert_eq!(
        parse_error(&with_market(
            "{ time_zone = \"Asia/Shanghai\", sessions = [[\"09:30\", \"11:30\"], [\"11:00\", \"15:00\"]] }"
        )),
        "invalid pipeline: [time] market: market \"custom\": session 1 (11:00-15:00) starts \
         before session 0 (09:30-11:30) ends; list sessions in time order without overlap"
    );
}

#[test]
fn custom_market_session_ending_before_it_starts() {
    assert_eq!(
        parse_error(&with_market(
            "{ time_zone = \"Asia/Shanghai\", sessions = [[\"11:30\", \"09:30\"]] }"
        )),
        "invalid pipeline: [time] market: market \"custom\": session 0 (11:30-09:30) does not \
         end after it starts; give start before end"
    );
}

/// "25:00" is a valid session end (past midnight, for night sessions); "25:60" is not.
#[test]
fn custom_market_bad_session_time() {
    assert_eq!(
        parse_error(&with_market(
            "{ time_zone = \"Asia/Shanghai\", sessions = [[\"21:00\", \"25:60\"]] }"
        )),
        "invalid pipeline: [time] market: invalid session time \"25:60\" for market \"custom\"; \
         expected HH:MM or HH:MM:SS with hours 00-48, e.g. \"09:30\" or \"24:00\""
    );
}

#[test]
fn custom_market_without_sessions() {
    assert_eq!(
        parse_error(&with_market("{ time_zone = \"Asia/Shanghai\" }")),
        "invalid pipeline: [time] market: market config needs a preset name (CN, KR, HK, \
         hkex_northbound, JP, US, crypto) or both time_zone and sessions"
    );
}

#[test]
fn custom_market_unknown_key() {
    assert_eq!(
        parse_error(&with_market("{ zone = \"Asia/Shanghai\" }")),
        "invalid pipeline: TOML parse error at line 29, column 12\n   \
         |\n\
         29 | market = { zone = \"Asia/Shanghai\" }\n   \
         |            ^^^^\n\
         unknown field `zone`, expected one of `name`, `time_zone`, `sessions`"
    );
}

#[test]
fn market_of_wrong_type() {
    assert_eq!(
        parse_error(&with_market("5")),
        "invalid pipeline: TOML parse error at line 29, column 10\n   \
         |\n\
         29 | market = 5\n   \
         |          ^\n\
         invalid type: integer `5`, expected a preset name (CN, KR, HK, hkex_northbound, JP, \
         US, crypto) or a table { time_zone = \"...\", sessions = [[\"09:30\", \"11:30\"], ...] }"
    );
}

#[test]
fn bad_timestamp_format() {
    assert_eq!(
        parse_error(&markout_with(
            "format = \"hhmmssmmm\"",
            "format = \"hhmmsss\""
        )),
        "invalid pipeline: TOML parse error at line 30, column 10\n   \
         |\n\
         30 | format = \"hhmmsss\"\n   \
         |          ^^^^^^^^^\n\
         unknown variant `hhmmsss`, expected one of `auto`, `hhmmssmmm`, `hhmmss`, \
         `epoch_seconds`, `epoch_millis`, `epoch_micros`, `epoch_nanos`"
    );
}

#[test]
fn bad_out_of_session() {
    assert_eq!(
        parse_error(&markout_with(
            "out_of_session = \"clamp\"",
            "out_of_session = \"skip\""
        )),
        "invalid pipeline: TOML parse error at line 31, column 18\n   \
         |\n\
         31 | out_of_session = \"skip\"\n   \
         |                  ^^^^^^\n\
         unknown variant `skip`, expected one of `clamp`, `drop`, `error`"
    );
}

// [[cast]].

#[test]
fn cast_to_unsupported_type() {
    assert_eq!(
        parse_error(&markout_with("to = \"int64\"", "to = \"int32\"")),
        "invalid pipeline: [[cast]] column 'qty': unsupported to = \"int32\"; \
         the only supported type is \"int64\""
    );
}

#[test]
fn cast_tolerance_out_of_range() {
    assert_eq!(
        parse_error(&markout_with(
            "to = \"int64\"",
            "to = \"int64\"\ntolerance = 0.5"
        )),
        "invalid pipeline: [[cast]] column 'qty': tolerance 0.5 must be at least 0 and below 0.5 \
         (the default is 1e-6)"
    );
}

#[test]
fn cast_bad_on_error() {
    assert_eq!(
        parse_error(&markout_with(
            "to = \"int64\"",
            "to = \"int64\"\non_error = \"drop\""
        )),
        "invalid pipeline: TOML parse error at line 24, column 12\n   \
         |\n\
         24 | on_error = \"drop\"\n   \
         |            ^^^^^^\n\
         unknown variant `drop`, expected `error` or `null`"
    );
}

// [derive].

/// The pipeline with `mid = {mid}`.
fn with_mid(mid: &str) -> String {
    markout_with(
        "mid = \"(AskPrice1 + BidPrice1) / 2\"",
        &format!("mid = {mid}"),
    )
}

#[test]
fn derive_does_not_parse() {
    assert_eq!(
        parse_error(&with_mid("\"AskPrice1 + * BidPrice1\"")),
        "invalid pipeline: [derive] mid: cannot parse expression 'AskPrice1 + * BidPrice1': \
         Expected: an expression, found: * at Line: 1, Column: 13"
    );
    assert_eq!(
        parse_error(&with_mid("\"(AskPrice1 + BidPrice1 / 2\"")),
        "invalid pipeline: [derive] mid: cannot parse expression '(AskPrice1 + BidPrice1 / 2': \
         Expected: ), found: EOF"
    );
}

#[test]
fn derive_unknown_function() {
    assert_eq!(
        parse_error(&with_mid("\"sqr(AskPrice1)\"")),
        "invalid pipeline: [derive] mid: unknown function 'sqr' in expression 'sqr(AskPrice1)'; \
         did you mean 'sqrt'? supported functions: abs, sqrt, ln, log10, exp, floor, ceil, \
         round, least, greatest, coalesce, CAST, TRY_CAST"
    );
}

#[test]
fn derive_aggregate_function() {
    assert_eq!(
        parse_error(&with_mid("\"avg(AskPrice1, BidPrice1)\"")),
        "invalid pipeline: [derive] mid: unsupported aggregate function \
         `avg(AskPrice1, BidPrice1)` in expression 'avg(AskPrice1, BidPrice1)'"
    );
}

#[test]
fn derive_not_a_string() {
    assert_eq!(
        parse_error(&with_mid("2")),
        "invalid pipeline: [derive] mid: expected a string, got integer 2; \
         write it in quotes: mid = \"2\""
    );
}

// [forward_return] and [bin].

fn with_horizons(horizons: &str) -> String {
    markout_with(
        "horizons = [60, 300, 600]",
        &format!("horizons = {horizons}"),
    )
}

#[test]
fn horizons_empty() {
    assert_eq!(
        parse_error(&with_horizons("[]")),
        "invalid pipeline: [forward_return] horizons: the list is empty; horizons are seconds \
         of trading time, \"close\", \"next_open\" or \"next_close\", e.g. horizons = [60, 300, \
         \"close\"]"
    );
}

#[test]
fn horizons_not_positive() {
    assert_eq!(
        parse_error(&with_horizons("[60, -300]")),
        "invalid pipeline: [forward_return] horizons: -300 is not positive; horizons are seconds \
         of trading time, \"close\", \"next_open\" or \"next_close\", e.g. horizons = [60, 300, \
         \"close\"]"
    );
    assert_eq!(
        parse_error(&with_horizons("[0]")),
        "invalid pipeline: [forward_return] horizons: 0 is not positive; horizons are seconds \
         of trading time, \"close\", \"next_open\" or \"next_close\", e.g. horizons = [60, 300, \
         \"close\"]"
    );
}

#[test]
fn horizons_duplicate() {
    assert_eq!(
        parse_error(&with_horizons("[60, 300, 60]")),
        "invalid pipeline: [forward_return] horizons: 60 is listed twice; horizons are seconds \
         of trading time, \"close\", \"next_open\" or \"next_close\", e.g. horizons = [60, 300, \
         \"close\"]"
    );
}

#[test]
fn horizons_by_name() {
    let suffix = "; horizons are seconds of trading time, \"close\", \"next_open\" or \
                  \"next_close\", e.g. horizons = [60, 300, \"close\"]";
    assert!(Pipeline::from_toml(&with_horizons("[60, \"close\"]")).is_ok());
    assert!(Pipeline::from_toml(&with_horizons("[\"next_open\", \"next_close\"]")).is_ok());
    assert_eq!(
        parse_error(&with_horizons("[\"close\", 60, \"close\"]")),
        format!("invalid pipeline: [forward_return] horizons: \"close\" is listed twice{suffix}")
    );
    assert_eq!(
        parse_error(&with_horizons("[60, \"open\"]")),
        format!("invalid pipeline: [forward_return] horizons: \"open\" is not a horizon{suffix}")
    );
    assert_eq!(
        parse_error(&with_horizons("[\"next_open\", \"next_open\"]")),
        format!(
            "invalid pipeline: [forward_return] horizons: \"next_open\" is listed twice{suffix}"
        )
    );
    let float = parse_error(&with_horizons("[60, 1.5]"));
    assert!(
        float.contains("expected seconds of trading time (an integer) or a name"),
        "{float}"
    );
}

#[test]
fn bin_width_not_positive() {
    assert_eq!(
        parse_error(&markout_with("alpha1 = 1e-4", "alpha1 = 0")),
        "invalid pipeline: [bin] alpha1: the width must be a positive number, got 0; \
         e.g. alpha1 = 1e-4"
    );
    assert_eq!(
        parse_error(&markout_with("alpha1 = 1e-4", "alpha1 = -0.5")),
        "invalid pipeline: [bin] alpha1: the width must be a positive number, got -0.5; \
         e.g. alpha1 = 1e-4"
    );
}

#[test]
fn bin_width_not_a_number() {
    assert_eq!(
        parse_error(&markout_with("alpha1 = 1e-4", "alpha1 = \"1e-4\"")),
        "invalid pipeline: [bin] alpha1: the width must be a positive number, got \"1e-4\"; \
         e.g. alpha1 = 1e-4"
    );
}

// [aggregate].

const METRICS: &str = "count = \"count()\"\n\
    total_qty = \"sum(qty)\"\n\
    mean_return_60 = \"mean(return_60)\"\n\
    mean_return_300 = \"mean(return_300)\"\n\
    mean_return_600 = \"mean(return_600)\"\n";

fn with_total_qty(metric: &str) -> String {
    markout_with("total_qty = \"sum(qty)\"", &format!("total_qty = {metric}"))
}

#[test]
fn no_metrics() {
    assert_eq!(
        parse_error(&markout_with(METRICS, "")),
        "invalid pipeline: [aggregate.metrics] is empty; define at least one metric, \
         e.g. count = \"count()\""
    );
}

#[test]
fn no_metrics_table() {
    assert_eq!(
        parse_error(&markout_with(
            &format!("[aggregate.metrics]\n{METRICS}"),
            ""
        )),
        "invalid pipeline: TOML parse error at line 40, column 1\n   \
         |\n\
         40 | [aggregate]\n   \
         | ^^^^^^^^^^^\n\
         missing field `metrics`"
    );
}

#[test]
fn metric_does_not_parse() {
    assert_eq!(
        parse_error(&with_total_qty("\"sum(qty\"")),
        "invalid pipeline: [aggregate.metrics] total_qty: cannot parse expression 'sum(qty': \
         Expected: ), found: EOF"
    );
}

#[test]
fn metric_with_bare_column() {
    assert_eq!(
        parse_error(&with_total_qty("\"qty\"")),
        "invalid pipeline: [aggregate.metrics] total_qty: column 'qty' is used outside an \
         aggregate in metric 'qty'; aggregate it, e.g. sum(qty) or mean(qty)"
    );
}

#[test]
fn metric_aggregating_an_expression() {
    assert_eq!(
        parse_error(&with_total_qty("\"sum(qty * fillPrice)\"")),
        "invalid pipeline: [aggregate.metrics] total_qty: the argument of sum(qty * fillPrice) \
         in metric 'sum(qty * fillPrice)' is an expression, not a column; define a derived \
         column first, e.g. `derive: x = qty * fillPrice`, and aggregate that column"
    );
}

#[test]
fn metric_unknown_function() {
    assert_eq!(
        parse_error(&with_total_qty("\"total(qty)\"")),
        "invalid pipeline: [aggregate.metrics] total_qty: unknown function 'total' in \
         expression 'total(qty)'; supported functions: abs, sqrt, ln, log10, exp, floor, ceil, \
         round, least, greatest, coalesce, CAST, TRY_CAST"
    );
}

#[test]
fn metric_not_a_string() {
    assert_eq!(
        parse_error(&with_total_qty("1")),
        "invalid pipeline: [aggregate.metrics] total_qty: expected a string, got integer 1; \
         write it in quotes: total_qty = \"1\""
    );
}

#[test]
fn metric_named_like_a_group_by_column() {
    assert_eq!(
        parse_error(&markout_with(
            "total_qty = \"sum(qty)\"",
            "orderSide = \"sum(qty)\""
        )),
        "invalid pipeline: [aggregate.metrics] orderSide: the name is also a group_by column; \
         rename the metric"
    );
}

// Binding to a schema: unknown columns.

#[test]
fn derive_unknown_column() {
    assert_eq!(
        bind_error(
            &with_mid("\"(ask_price1 + BidPrice1) / 2\""),
            &alpha_schema()
        ),
        format!(
            "invalid pipeline: [derive] mid: unknown column 'ask_price1' in expression \
             '(ask_price1 + BidPrice1) / 2'; did you mean 'AskPrice1'? available columns: \
             {ALPHA_COLUMNS}, row_id"
        )
    );
}

/// Forward returns use the original rows, so their price cannot be derived from a
/// column added later (a return, or an enrich rule's output).
#[test]
fn forward_return_price_from_a_later_stage() {
    assert_eq!(
        bind_error(&with_mid("\"return_60 * 2\""), &alpha_schema()),
        "invalid pipeline: [forward_return] price column 'mid' is a derived column that \
         uses a column added after forward returns are computed (they use the original \
         rows, before [[enrich]]); derive the price from input columns only"
    );
}

/// A derived column that uses parse_time's output is computed right after it, so it can
/// be the forward-return price.
#[test]
fn derive_using_trading_time_binds() {
    let bound = Pipeline::from_toml(&with_mid("\"AskPrice1 + elapsed_ms / 1e9\""))
        .unwrap()
        .bind(&alpha_schema())
        .unwrap();
    assert!(matches!(bound.stages[1], Stage::ParseTime(_)));
    let Stage::Derive(timed) = &bound.stages[2] else {
        panic!("a derive stage after parse_time: {:?}", bound.stages);
    };
    assert_eq!(timed.columns[0].0, "mid");
    assert!(first_derive(&bound).columns.is_empty());
}

#[test]
fn timestamp_column_missing() {
    assert_eq!(
        bind_error(
            &markout_with("timestamp = \"ticktime\"", "timestamp = \"tick_time\""),
            &alpha_schema()
        ),
        format!(
            "invalid pipeline: [time] unknown timestamp column 'tick_time'; did you mean \
             'ticktime'? available columns: {ALPHA_COLUMNS}, row_id, mid"
        )
    );
}

#[test]
fn symbol_column_missing() {
    assert_eq!(
        bind_error(
            &markout_with("symbol = \"ukey\"", "symbol = \"ukye\""),
            &alpha_schema()
        ),
        format!(
            "invalid pipeline: [columns] unknown symbol column 'ukye'; did you mean 'ukey'? \
             available columns: {ALPHA_COLUMNS}, row_id, mid"
        )
    );
}

#[test]
fn forward_return_price_missing() {
    assert_eq!(
        bind_error(
            &markout_with("price = \"mid\"", "price = \"midd\""),
            &alpha_schema()
        ),
        format!(
            "invalid pipeline: [forward_return] unknown price column 'midd'; did you mean 'mid'? \
             available columns: {ALPHA_COLUMNS}, row_id, mid, elapsed_ms, elapsed_seconds"
        )
    );
}

#[test]
fn bin_column_missing() {
    assert_eq!(
        bind_error(
            &markout_with("alpha1 = 1e-4", "alpha3 = 1e-4"),
            &alpha_schema()
        ),
        format!(
            "invalid pipeline: [bin] unknown column 'alpha3'; did you mean 'alpha1'? available \
             columns: {ALPHA_COLUMNS}, row_id, mid, elapsed_ms, elapsed_seconds, return_60, \
             return_300, return_600"
        )
    );
}

#[test]
fn metric_over_unknown_column() {
    assert_eq!(
        bind_error(&with_total_qty("\"sum(qtty)\""), &alpha_schema()),
        format!(
            "invalid pipeline: [aggregate] unknown column 'qtty' in metric 'total_qty' = \
             'sum(qtty)'; did you mean 'qty'? available columns: {ALPHA_COLUMNS}, row_id, mid, \
             elapsed_ms, elapsed_seconds, return_60, return_300, return_600, alpha1_bin"
        )
    );
}

#[test]
fn group_by_unknown_column() {
    let group_by = "group_by = [\"alpha1_bin\", \"orderSide\"]";
    assert_eq!(
        bind_error(
            &markout_with(group_by, "group_by = [\"alpha1_bin\", \"order_side\"]"),
            &alpha_schema()
        ),
        format!(
            "invalid pipeline: [aggregate] unknown column 'order_side' in group_by; did you mean \
             'orderSide'? available columns: {ALPHA_COLUMNS}, row_id, mid, elapsed_ms, \
             elapsed_seconds, return_60, return_300, return_600, alpha1_bin"
        )
    );
}

#[test]
fn cast_unknown_column() {
    assert_eq!(
        bind_error(
            &markout_with("column = \"qty\"", "column = \"qtyy\""),
            &alpha_schema()
        ),
        format!(
            "invalid pipeline: [[cast]] unknown column 'qtyy'; did you mean 'qty'? \
             available columns: {ALPHA_COLUMNS}"
        )
    );
}

// Binding to a schema: column types.

#[test]
fn forward_return_price_not_numeric() {
    assert_eq!(
        bind_error(
            &markout_with("price = \"mid\"", "price = \"orderSide\""),
            &alpha_schema()
        ),
        "invalid pipeline: [forward_return] price column 'orderSide' has type Utf8; \
         it must be numeric"
    );
}

#[test]
fn bin_column_not_numeric() {
    assert_eq!(
        bind_error(
            &markout_with("alpha1 = 1e-4", "alpha1 = 1e-4\norderSide = 1"),
            &alpha_schema()
        ),
        "invalid pipeline: [bin] column 'orderSide' has type Utf8; it must be numeric"
    );
}

#[test]
fn metric_sum_of_string_column() {
    assert_eq!(
        bind_error(&with_total_qty("\"sum(orderSide)\""), &alpha_schema()),
        "invalid pipeline: [aggregate] sum(orderSide) needs a numeric or boolean column, \
         but 'orderSide' has type Utf8 (in metric 'total_qty' = 'sum(orderSide)')"
    );
}

#[test]
fn group_by_unsupported_type() {
    assert_eq!(
        bind_error(
            MARKOUT,
            &alpha_schema_with("orderSide", "orderSide", DataType::Binary)
        ),
        "invalid pipeline: [aggregate] cannot group by 'orderSide' of type Binary; group by \
         integers, floats, strings, booleans or dates"
    );
}

#[test]
fn symbol_column_of_float_type() {
    assert_eq!(
        bind_error(
            MARKOUT,
            &alpha_schema_with("ukey", "ukey", DataType::Float64)
        ),
        "invalid pipeline: [columns] symbol column 'ukey' has type Float64, but symbols must be \
         integers or strings; cast it with [[cast]] column = \"ukey\" and to = \"int64\""
    );
}

#[test]
fn timestamp_column_of_unsupported_type() {
    assert_eq!(
        bind_error(
            MARKOUT,
            &alpha_schema_with("ticktime", "ticktime", DataType::Boolean)
        ),
        "invalid pipeline: [time] timestamp column 'ticktime': unsupported timestamp column \
         type Boolean; supported: integers (HHMMSSmmm, HHMMSS, epoch s/ms/us/ns), Float64 \
         holding integral values, Timestamp of any unit with or without a time zone, \
         Utf8/LargeUtf8/Utf8View \"HH:MM:SS[.fff]\""
    );
}

#[test]
fn cast_of_string_column() {
    assert_eq!(
        bind_error(
            &markout_with("column = \"qty\"", "column = \"orderSide\""),
            &alpha_schema()
        ),
        "invalid pipeline: [[cast]] column 'orderSide' has type Utf8; only numeric columns can \
         be cast to int64"
    );
}

/// The first stage: casts, the derived columns of input columns, the projection.
fn first_derive(bound: &BoundPipeline) -> &DeriveSpec {
    match &bound.stages[0] {
        Stage::Derive(spec) => spec,
        other => panic!("the first stage is {other:?}"),
    }
}

/// Regression: a derived column nothing used was checked against the projected columns
/// only, so `fillPrice` (in the file, but not otherwise read) was reported unknown.
#[test]
fn unused_derived_column_binds() {
    let text = markout_with(
        "[derive]\n",
        "[derive]\nspread = \"AskPrice1 - fillPrice\"\n",
    );
    let bound = Pipeline::from_toml(&text)
        .unwrap()
        .bind(&alpha_schema())
        .unwrap();
    assert!(
        !bound.read.contains(&"fillPrice".to_owned()),
        "{:?}",
        bound.read
    );
    assert!(
        first_derive(&bound)
            .columns
            .iter()
            .all(|(name, _)| name != "spread")
    );
}

/// Regression: a cast of a column nothing used stayed in the derive stage, which then
/// failed every date on the column it had not read.
#[test]
fn unused_cast_binds() {
    let cast = "[[cast]]\ncolumn = \"alpha2\"\nto = \"int64\"\n\n[derive]\n";
    let text = markout_with("[derive]\n", cast);
    let bound = Pipeline::from_toml(&text)
        .unwrap()
        .bind(&alpha_schema())
        .unwrap();
    assert!(
        !bound.read.contains(&"alpha2".to_owned()),
        "{:?}",
        bound.read
    );
    assert!(
        first_derive(&bound)
            .casts
            .iter()
            .all(|cast| cast.column != "alpha2")
    );
}

// check_schema: a later date's file against the first.

#[test]
fn later_date_missing_column() {
    let bound = Pipeline::from_toml(MARKOUT)
        .unwrap()
        .bind(&alpha_schema())
        .unwrap();
    let later = alpha_schema_with("AskPrice1", "AskPrice_1", DataType::Float64);
    assert_eq!(
        bound.check_schema(&later).unwrap_err().to_string(),
        "column 'AskPrice1' is missing, though the first date has it; did you mean \
         'AskPrice_1'? available columns: ticktime, ukey, orderSide, qty, fillPrice, BidPrice1, \
         AskPrice_1, alpha1, alpha2"
    );
}

#[test]
fn later_date_column_of_other_type() {
    let bound = Pipeline::from_toml(MARKOUT)
        .unwrap()
        .bind(&alpha_schema())
        .unwrap();
    let later = alpha_schema_with("ticktime", "ticktime", DataType::Float64);
    assert_eq!(
        bound.check_schema(&later).unwrap_err().to_string(),
        "column 'ticktime' has type Float64 here but Int64 on the first date; make the type \
         consistent across dates, or cast the column with [[cast]] column = \"ticktime\""
    );
    let later = alpha_schema_with("orderSide", "orderSide", DataType::Int64);
    assert_eq!(
        bound.check_schema(&later).unwrap_err().to_string(),
        "column 'orderSide' has type Int64 here but Utf8 on the first date; make the type \
         consistent across dates"
    );
}

/// A cast column may be integer on one date and float on another: the cast makes both
/// Int64.
#[test]
fn later_date_cast_column_of_other_number_type() {
    let bound = Pipeline::from_toml(MARKOUT)
        .unwrap()
        .bind(&alpha_schema())
        .unwrap();
    assert_eq!(
        bound.check_schema(&alpha_schema_with("qty", "qty", DataType::Int64)),
        Ok(())
    );
}
