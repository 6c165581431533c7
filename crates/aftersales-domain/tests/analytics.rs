//! Return rates by business line, category, SKU and reason, and threshold alerts.

use aftersales_domain::{
    BusinessLineId, CategoryId, RateScope, RateThreshold, Ratio, Reason, SalesEvent, SalesRecord,
    Sku, UnixMillis, Window, alerts, return_rates,
};

fn sold(line: &str, category: &str, sku: &str, at: i64, quantity: u64) -> SalesRecord {
    SalesRecord {
        business_line: BusinessLineId::new(line),
        category: CategoryId::new(category),
        sku: Sku::new(sku),
        at: UnixMillis(at),
        event: SalesEvent::Sold { quantity },
    }
}

fn returned(
    line: &str,
    category: &str,
    sku: &str,
    at: i64,
    quantity: u64,
    reason: Reason,
) -> SalesRecord {
    SalesRecord {
        business_line: BusinessLineId::new(line),
        category: CategoryId::new(category),
        sku: Sku::new(sku),
        at: UnixMillis(at),
        event: SalesEvent::Returned { quantity, reason },
    }
}

fn records() -> Vec<SalesRecord> {
    vec![
        // 3C: 1000 phones sold, 25 returned (2.5%); 200 chargers, 10 returned (5%).
        sold("3c", "phones", "phone-128", 100, 1_000),
        returned("3c", "phones", "phone-128", 150, 20, Reason::Quality),
        returned("3c", "phones", "phone-128", 160, 5, Reason::NoReason),
        sold("3c", "chargers", "charger-65w", 100, 200),
        returned("3c", "chargers", "charger-65w", 170, 10, Reason::Quality),
        // Apparel: 400 dresses, 90 returned (22.5%), 60 of them for size.
        sold("apparel", "dresses", "dress-m", 120, 400),
        returned("apparel", "dresses", "dress-m", 180, 60, Reason::WrongSize),
        returned("apparel", "dresses", "dress-m", 190, 30, Reason::NoReason),
        // Outside the window on both sides.
        sold("3c", "phones", "phone-128", 99, 1_000_000),
        returned("3c", "phones", "phone-128", 200, 1_000, Reason::Quality),
    ]
}

#[track_caller]
fn window() -> Window {
    match Window::new(UnixMillis(100), UnixMillis(200)) {
        Ok(window) => window,
        Err(err) => panic!("{err}"),
    }
}

#[track_caller]
fn rate_of(rates: &[aftersales_domain::ReturnRate], line: &str, scope: RateScope) -> Ratio {
    match rates
        .iter()
        .find(|r| r.business_line.as_str() == line && r.scope == scope)
    {
        Some(rate) => rate.ratio,
        None => panic!("no rate for {line} {scope:?}"),
    }
}

#[test]
fn rates_by_business_line_category_sku_and_reason_over_a_half_open_window() {
    let rates = return_rates(&records(), window());
    let bl = rate_of(&rates, "3c", RateScope::BusinessLine);
    assert_eq!(
        bl,
        Ratio {
            returned: 35,
            sold: 1_200
        }
    );
    // 35 / 1200 = 291.67 bp → 291, rounded down.
    assert_eq!(bl.basis_points(), Some(291));
    assert_eq!(
        rate_of(
            &rates,
            "3c",
            RateScope::Category(CategoryId::new("chargers"))
        )
        .basis_points(),
        Some(500)
    );
    assert_eq!(
        rate_of(&rates, "3c", RateScope::Sku(Sku::new("phone-128"))).basis_points(),
        Some(250)
    );
    // A reason's rate is over everything the business line sold: 30 / 1200.
    assert_eq!(
        rate_of(&rates, "3c", RateScope::Reason(Reason::Quality)),
        Ratio {
            returned: 30,
            sold: 1_200
        }
    );
    assert_eq!(
        rate_of(&rates, "apparel", RateScope::Reason(Reason::WrongSize)).basis_points(),
        Some(1_500)
    );
    assert_eq!(
        rate_of(&rates, "apparel", RateScope::BusinessLine).basis_points(),
        Some(2_250)
    );

    // Sorted: business lines by id, then business line, categories, SKUs, reasons.
    let order: Vec<(String, String)> = rates
        .iter()
        .map(|r| {
            (
                r.business_line.as_str().to_owned(),
                serde_json::to_string(&r.scope).unwrap(),
            )
        })
        .collect();
    assert_eq!(
        order[0],
        ("3c".to_owned(), r#"{"kind":"business_line"}"#.to_owned())
    );
    assert_eq!(
        order[1],
        (
            "3c".to_owned(),
            r#"{"kind":"category","value":"chargers"}"#.to_owned()
        )
    );
    assert_eq!(rates.len(), 12);
}

#[test]
fn alerts_fire_strictly_above_each_business_lines_threshold() {
    let rates = return_rates(&records(), window());
    let thresholds = [
        RateThreshold {
            business_line: BusinessLineId::new("3c"),
            max_bp: 300,
            min_sold: 100,
        },
        RateThreshold {
            business_line: BusinessLineId::new("apparel"),
            max_bp: 2_500,
            min_sold: 100,
        },
    ];
    let fired = alerts(&rates, &thresholds);
    // Only the charger category and SKU (5%) are above 3C's 3%; apparel's 22.5% is within
    // its 25%.
    let scopes: Vec<(&str, RateScope, Option<u64>)> = fired
        .iter()
        .map(|a| (a.business_line.as_str(), a.scope.clone(), a.basis_points))
        .collect();
    assert_eq!(
        scopes,
        [
            (
                "3c",
                RateScope::Category(CategoryId::new("chargers")),
                Some(500)
            ),
            ("3c", RateScope::Sku(Sku::new("charger-65w")), Some(500)),
        ]
    );
    assert!(fired.iter().all(|a| a.threshold_bp == 300));

    // Below `min_sold`, nothing fires.
    let strict = [RateThreshold {
        business_line: BusinessLineId::new("3c"),
        max_bp: 300,
        min_sold: 1_000,
    }];
    assert!(alerts(&rates, &strict).is_empty());
    // No threshold, no alert.
    assert!(alerts(&rates, &[]).is_empty());
}

#[test]
fn thresholds_read_from_toml() {
    let t: RateThreshold = toml::from_str(
        r#"
business_line = "apparel"
max_bp = 2500
"#,
    )
    .unwrap();
    assert_eq!(t.max_bp, 2_500);
    assert_eq!(t.min_sold, 1);
}
