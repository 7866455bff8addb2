//! The history as the predecessor's client reads it (`predecessor-api.md` §3): offset pages
//! (`skip`), its `type` filter values, and its row shape. Pure functions over the native
//! history rows; `GET /api/transactions` (native, `http/transactions.rs`) and
//! `GET /api/wallet/transfers` (`transfers.rs`) answer with them.

use chrono::SecondsFormat;
use cryptovault_projections::history::TransactionKind;
use rust_decimal::Decimal;
use serde::Serialize;
use utoipa::ToSchema;

use super::number::JsonNumber;
use crate::http::error::ApiError;
use crate::http::paging::number;
use crate::http::views::TransactionItem;
use crate::identity::domain::InvalidInput;
use crate::ledger::amount::Assets;
use crate::store::read_models::HistoryRow;

/// The largest `skip` accepted: the rows skipped are index entries MongoDB passes over, so the
/// cost of a page grows with it. The old client pages by 20; 100,000 is 5,000 pages.
pub const MAX_SKIP: u64 = 100_000;

/// The most rows a `total` counts: the furthest an offset page can reach (`MAX_SKIP` plus the
/// largest page). A history longer than that answers this number.
pub const MAX_TOTAL: u64 = MAX_SKIP + 200;

/// `skip`: a non-negative integer up to [`MAX_SKIP`] (422 naming `skip` otherwise).
pub fn skip(raw: Option<&str>) -> Result<Option<u64>, InvalidInput> {
    match number(raw, "skip")? {
        Some(n) if n > MAX_SKIP => Err(InvalidInput {
            field: "skip",
            message: format!("must be at most {MAX_SKIP}"),
        }),
        other => Ok(other),
    }
}

/// The `type` values of `GET /api/transactions`, native and the old client's, as listed in
/// the 422 message.
pub const TYPE_VALUES: &str =
    "deposit, withdrawal, transfer_in, transfer_out, withdraw, transfer, buy, sell";

/// The row kinds a `type` value lists: a native kind itself; the old client's `withdraw` the
/// withdrawals, `transfer` both directions of transfers, `buy` and `sell` nothing (this
/// service does not trade: an empty page, not an error). Anything else is 422 naming `type`.
pub fn kinds_of_type(raw: &str) -> Result<Vec<TransactionKind>, InvalidInput> {
    if let Some(kind) = TransactionKind::parse(raw) {
        return Ok(vec![kind]);
    }
    match raw {
        "withdraw" => Ok(vec![TransactionKind::Withdrawal]),
        "transfer" => Ok(vec![
            TransactionKind::TransferIn,
            TransactionKind::TransferOut,
        ]),
        "buy" | "sell" => Ok(Vec::new()),
        _ => Err(InvalidInput {
            field: "type",
            message: format!("must be one of {TYPE_VALUES}"),
        }),
    }
}

/// The old client's `type` of a native row kind.
pub fn old_type(kind: TransactionKind) -> OldType {
    match kind {
        TransactionKind::Deposit => OldType::Deposit,
        TransactionKind::Withdrawal => OldType::Withdraw,
        TransactionKind::TransferIn | TransactionKind::TransferOut => OldType::Transfer,
    }
}

/// The `type` of an old client's row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OldType {
    Deposit,
    Withdraw,
    Transfer,
}

/// One row of `transactions` in an offset page of `GET /api/transactions`: the predecessor
/// client's shape of a native history row.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct OldTransaction {
    /// The deposit, withdrawal or transfer id (the native row's `id`).
    pub id: String,
    #[serde(rename = "type")]
    pub kind: OldType,
    /// The asset code (`BTC`).
    pub symbol: String,
    /// Signed change to the caller's balance, in the asset's unit with its decimal places:
    /// negative for withdrawals and transfers out.
    pub amount: JsonNumber,
    /// The native row's status (`completed`; a withdrawal's `pending`, `approved`,
    /// `rejected`).
    pub status: String,
    /// RFC 3339, UTC, milliseconds.
    #[serde(rename = "createdAt")]
    #[schema(format = DateTime)]
    pub created_at: String,
}

/// A row's kind; a stored row always has one of the four (500 otherwise: a read model this
/// code did not write).
pub fn row_kind(row: &HistoryRow) -> Result<TransactionKind, ApiError> {
    TransactionKind::parse(&row.kind).ok_or_else(|| {
        ApiError::Internal(anyhow::anyhow!(
            "history row {} has the unknown type {:?}",
            row.key,
            row.kind
        ))
    })
}

/// A row's positive amount with the asset's decimal places (more, never fewer, than the
/// stored text: never rounded); 500 if the stored text is not a decimal.
pub fn row_amount(assets: &Assets, row: &HistoryRow) -> Result<Decimal, ApiError> {
    let mut amount: Decimal = row.amount.parse().map_err(|e| {
        ApiError::Internal(anyhow::anyhow!(
            "history row {} has the amount {:?}: {e}",
            row.key,
            row.amount
        ))
    })?;
    if let Some(places) = assets.precision(&row.asset) {
        if places > amount.scale() {
            amount.rescale(places);
        }
    }
    Ok(amount)
}

/// `createdAt` of an old client's row: RFC 3339 in UTC with milliseconds (the instant is
/// stored to the millisecond), the form JavaScript's `Date` parses.
pub fn created_at(row: &HistoryRow) -> String {
    row.created_at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A native history row in the old client's shape.
pub fn old_transaction(assets: &Assets, row: &HistoryRow) -> Result<OldTransaction, ApiError> {
    let kind = row_kind(row)?;
    let amount = row_amount(assets, row)?;
    let signed = match kind {
        TransactionKind::Withdrawal | TransactionKind::TransferOut => -amount,
        TransactionKind::Deposit | TransactionKind::TransferIn => amount,
    };
    Ok(OldTransaction {
        id: row.id.clone(),
        kind: old_type(kind),
        symbol: row.asset.clone(),
        amount: JsonNumber(signed),
        status: row.status.clone(),
        created_at: created_at(row),
    })
}

/// `GET /api/transactions`: one page of history, newest first. A cursor page has the native
/// keys only; an offset page (`skip` given) adds `transactions` and `total` for the
/// predecessor's client.
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryPage {
    pub items: Vec<TransactionItem>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
    pub position: u64,
    /// Offset pages only (`skip` given): the rows of `items` in the predecessor client's shape.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Vec<OldTransaction>)]
    pub transactions: Option<Vec<OldTransaction>>,
    /// Offset pages only (`skip` given): the number of rows matching the filter, counted up to
    /// 100,200 (the furthest an offset page reaches); a longer history answers 100,200.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = u64)]
    pub total: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn row(kind: &str, asset: &str, amount: &str) -> HistoryRow {
        let at = Utc.with_ymd_and_hms(2024, 5, 6, 7, 8, 9).unwrap()
            + chrono::Duration::milliseconds(120);
        HistoryRow {
            key: "u:t".into(),
            id: "t".into(),
            user_id: "u".into(),
            kind: kind.into(),
            asset: asset.into(),
            amount: amount.into(),
            status: "completed".into(),
            counterparty_id: None,
            note: None,
            address: None,
            created_at: at,
            updated_at: at,
            position: 7,
            status_positions: Default::default(),
        }
    }

    #[test]
    fn type_values_map_to_kinds_and_anything_else_names_type() {
        use TransactionKind::*;
        for kind in TransactionKind::ALL {
            assert_eq!(kinds_of_type(kind.as_str()).unwrap(), [kind]);
        }
        assert_eq!(kinds_of_type("withdraw").unwrap(), [Withdrawal]);
        assert_eq!(
            kinds_of_type("transfer").unwrap(),
            [TransferIn, TransferOut]
        );
        assert!(kinds_of_type("buy").unwrap().is_empty());
        assert!(kinds_of_type("sell").unwrap().is_empty());
        for bad in ["", "Deposit", "trade", "transfer ", "withdrawals"] {
            assert_eq!(kinds_of_type(bad).unwrap_err().field, "type", "{bad:?}");
        }
    }

    #[test]
    fn skip_is_a_bounded_non_negative_integer() {
        assert_eq!(skip(None).unwrap(), None);
        assert_eq!(skip(Some("0")).unwrap(), Some(0));
        assert_eq!(skip(Some("100000")).unwrap(), Some(MAX_SKIP));
        for bad in ["-1", "x", "1.5", "", "100001", "99999999999999999999999"] {
            assert_eq!(skip(Some(bad)).unwrap_err().field, "skip", "{bad:?}");
        }
    }

    #[test]
    fn rows_take_the_old_shape_with_signed_exact_amounts() {
        let assets = Assets::default();
        let eth = old_transaction(&assets, &row("deposit", "ETH", "1.000000000000000001")).unwrap();
        assert_eq!(eth.kind, OldType::Deposit);
        assert_eq!(eth.symbol, "ETH");
        assert_eq!(eth.created_at, "2024-05-06T07:08:09.120Z");
        let text = serde_json::to_string(&eth).unwrap();
        assert_eq!(
            text,
            r#"{"id":"t","type":"deposit","symbol":"ETH","amount":1.000000000000000001,"status":"completed","createdAt":"2024-05-06T07:08:09.120Z"}"#
        );
        let cases = [
            ("withdrawal", "BTC", "0.5", OldType::Withdraw, "-0.50000000"),
            ("transfer_out", "USD", "10", OldType::Transfer, "-10.00"),
            ("transfer_in", "USD", "10.25", OldType::Transfer, "10.25"),
            (
                "deposit",
                "BTC",
                "0.00000001",
                OldType::Deposit,
                "0.00000001",
            ),
        ];
        for (kind, asset, amount, old, signed) in cases {
            let out = old_transaction(&assets, &row(kind, asset, amount)).unwrap();
            assert_eq!(out.kind, old, "{kind}");
            assert_eq!(out.amount.0.to_string(), signed, "{kind} {amount}");
        }
    }

    #[test]
    fn a_row_this_code_did_not_write_is_an_error_not_a_figure() {
        let assets = Assets::default();
        assert!(old_transaction(&assets, &row("trade", "BTC", "1")).is_err());
        assert!(old_transaction(&assets, &row("deposit", "BTC", "ten")).is_err());
    }

    #[test]
    fn the_document_describes_skip_the_old_types_and_the_offset_keys() {
        let document = serde_json::to_value(crate::http::openapi()).unwrap();
        let schemas = &document["components"]["schemas"];
        let page = &schemas["HistoryPage"];
        let required: Vec<&str> = page["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap())
            .collect();
        assert_eq!(required, ["items", "next_cursor", "position"], "{page}");
        assert_eq!(page["properties"]["total"]["type"], "integer", "{page}");
        assert_eq!(
            page["properties"]["transactions"]["type"], "array",
            "{page}"
        );
        assert_eq!(schemas["JsonNumber"]["type"], "number");
        let old = &schemas["OldTransaction"];
        assert_eq!(
            old["properties"]["amount"]["$ref"],
            "#/components/schemas/JsonNumber"
        );
        assert_eq!(old["required"].as_array().unwrap().len(), 6, "{old}");
        let list = &document["paths"]["/api/transactions"]["get"];
        let parameter = |operation: &serde_json::Value, name: &str| {
            operation["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == name)
                .cloned()
                .unwrap_or_else(|| panic!("{name} is documented"))
        };
        assert_eq!(parameter(list, "skip")["schema"]["maximum"], MAX_SKIP);
        let types = parameter(list, "type");
        let values: Vec<&str> = types["schema"]["enum"]
            .as_array()
            .unwrap_or_else(|| panic!("{types}"))
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(values.join(", "), TYPE_VALUES);
        let transfers = &document["paths"]["/api/wallet/transfers"];
        assert!(transfers["post"].is_object(), "the native transfer stays");
        let get = &transfers["get"];
        assert_eq!(get["tags"][0], "predecessor");
        assert!(parameter(get, "skip").is_object() && parameter(get, "limit").is_object());
        let transfer = &schemas["OldTransfer"];
        assert_eq!(
            transfer["required"].as_array().unwrap().len(),
            8,
            "{transfer}"
        );
        assert!(transfer["properties"]["note"]["type"]
            .as_array()
            .is_some_and(|t| t.contains(&"null".into())));
    }

    #[test]
    fn offset_keys_are_absent_from_a_cursor_page() {
        let page = HistoryPage {
            items: Vec::new(),
            next_cursor: None,
            position: 3,
            transactions: None,
            total: None,
        };
        assert_eq!(
            serde_json::to_string(&page).unwrap(),
            r#"{"items":[],"next_cursor":null,"position":3}"#
        );
    }
}
