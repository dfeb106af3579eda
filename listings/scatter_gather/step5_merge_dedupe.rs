//! Step 5: merge the answers. Backends overlap: two shops sell the same
//! product. The merged answer lists each product once, at its best price,
//! with how many shops offer it, in a stable order (cheapest first, then by
//! SKU), so the same answers always merge to the same list whatever order
//! they arrived in.

use std::collections::BTreeMap;
use std::io::BufReader;
use std::net::SocketAddr;
use std::time::Duration;

use may_patterns::backend::{Backend, BackendConfig};
use may_patterns::http::{self, Limits};
use may_patterns::runtime::{configure_once, Settings};
use serde::Deserialize;

/// One offer, as a backend's JSON has it.
#[derive(Debug, Clone, Deserialize, PartialEq)]
struct Offer {
    sku: String,
    shop: String,
    price_cents: u64,
}

#[derive(Debug, Deserialize)]
struct Answer {
    offers: Vec<Offer>,
}

/// `GET /search?q=QUERY` on one backend; every step of it bounded by `timeout`.
fn call(addr: SocketAddr, query: &str, timeout: Duration) -> Result<Vec<Offer>, String> {
    let mut stream =
        may_patterns::net::connect_timeout(&addr, timeout).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let target = format!("/search?q={query}");
    http::write_request(&mut stream, "GET", &target, &addr.to_string(), &[], b"")
        .map_err(|e| format!("send: {e}"))?;
    let response = http::read_response(&mut BufReader::new(stream), &Limits::default())
        .map_err(|e| format!("receive: {e}"))?;
    if response.status != 200 {
        return Err(format!("HTTP {} {}", response.status, response.reason));
    }
    let answer: Answer =
        serde_json::from_slice(&response.body).map_err(|e| format!("JSON: {e}"))?;
    Ok(answer.offers)
}

// ANCHOR: merge
/// One product in the merged answer.
#[derive(Debug, Clone, PartialEq)]
struct Best {
    sku: String,
    shop: String,
    price_cents: u64,
    /// How many shops offer it (1 = no duplicate was removed).
    offered_by: usize,
}

/// Merge offers from every backend: one entry per SKU, the lowest price
/// (the shop name breaks a tie, so the result does not depend on arrival
/// order), sorted by price, then SKU.
fn merge(offers: impl IntoIterator<Item = Offer>) -> Vec<Best> {
    let mut by_sku: BTreeMap<String, Best> = BTreeMap::new();
    for offer in offers {
        let candidate = (offer.price_cents, offer.shop.clone());
        by_sku
            .entry(offer.sku.clone())
            .and_modify(|best| {
                best.offered_by += 1;
                if candidate < (best.price_cents, best.shop.clone()) {
                    (best.price_cents, best.shop) = candidate.clone();
                }
            })
            .or_insert(Best {
                sku: offer.sku,
                shop: offer.shop,
                price_cents: offer.price_cents,
                offered_by: 1,
            });
    }
    let mut merged: Vec<Best> = by_sku.into_values().collect();
    merged.sort_by(|a, b| (a.price_cents, &a.sku).cmp(&(b.price_cents, &b.sku)));
    merged
}
// ANCHOR_END: merge

// ANCHOR: main
fn main() {
    configure_once(Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    let backends: Vec<Backend> = ["north", "south", "east", "west"]
        .iter()
        .map(|name| Backend::start(BackendConfig::new(name, Duration::from_millis(2))).unwrap())
        .collect();
    // How the answers were gathered does not matter to the merge; one after
    // another keeps this step about merging.
    let mut offers = Vec::new();
    for b in &backends {
        offers.extend(call(b.addr, "lamp", Duration::from_secs(1)).expect("the backend answers"));
    }
    let total = offers.len();
    let merged = merge(offers);
    println!("{total} offers, {} products after merging:", merged.len());
    for best in &merged {
        println!(
            "  {:<7} {:>5.2} at {:<5} (offered by {})",
            best.sku,
            best.price_cents as f64 / 100.0,
            best.shop,
            best.offered_by
        );
    }
}
// ANCHOR_END: main

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(sku: &str, shop: &str, price_cents: u64) -> Offer {
        Offer {
            sku: sku.into(),
            shop: shop.into(),
            price_cents,
        }
    }

    #[test]
    fn each_product_appears_once_at_its_lowest_price() {
        let merged = merge([
            offer("a", "s1", 500),
            offer("b", "s1", 300),
            offer("a", "s2", 400),
            offer("a", "s3", 450),
        ]);
        assert_eq!(
            merged,
            vec![
                Best {
                    sku: "b".into(),
                    shop: "s1".into(),
                    price_cents: 300,
                    offered_by: 1
                },
                Best {
                    sku: "a".into(),
                    shop: "s2".into(),
                    price_cents: 400,
                    offered_by: 3
                },
            ]
        );
    }

    #[test]
    fn the_merge_does_not_depend_on_arrival_order() {
        let offers = vec![
            offer("a", "s1", 400),
            offer("a", "s2", 400), // a tie: the shop name decides
            offer("b", "s2", 100),
            offer("c", "s3", 100),
        ];
        let mut reversed = offers.clone();
        reversed.reverse();
        let merged = merge(offers);
        assert_eq!(merged, merge(reversed));
        assert_eq!(merged[2].shop, "s1");
        let skus: Vec<&str> = merged.iter().map(|b| b.sku.as_str()).collect();
        assert_eq!(skus, ["b", "c", "a"], "by price, then SKU");
    }
}
