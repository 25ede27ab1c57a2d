//! Typical request bodies for the benchmarks: a sign-up form and an order in JSON, with names,
//! prose, e-mail addresses and URLs, built to a target size.

/// A form body of about `size` bytes.
pub(crate) fn form(size: usize) -> Vec<u8> {
    let mut body = String::from(
        "csrf_token=q1w2e3r4t5y6u7i8o9p0&name=Siobh%C3%A1n+O%27Brien&email=anna.obrien%40example.com",
    );
    let mut index = 0;
    while body.len() < size {
        body.push_str(&format!(
            "&item{index}=Please+select+a+plan+that+fits+your+team%2C+then+update+billing+%2850%25+off%29&qty{index}={index}"
        ));
        index += 1;
    }
    body.into_bytes()
}

/// A JSON body of about `size` bytes.
pub(crate) fn json(size: usize) -> Vec<u8> {
    let mut items = Vec::new();
    let mut body = String::new();
    while body.len() < size {
        items.push(serde_json::json!({
            "sku": format!("SKU-{:05}", items.len()),
            "title": "Tim O'Reilly's 'What's the Future' (hardcover)",
            "note": "Gift wrap please; the box says \"fragile\" & \"this side up\".",
            "url": "https://shop.example/p/1234-red-shoes?ref=home#reviews",
            "quantity": items.len() % 5 + 1,
        }));
        body = serde_json::json!({"customer": {"name": "José Álvarez", "email": "jose@example.com"}, "items": items}).to_string();
    }
    body.into_bytes()
}
