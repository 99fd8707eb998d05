//! The expansion and every rejection, on token streams: what would be a
//! compile error in a user's crate is an `Err` here, with its message.

use proc_macro2::TokenStream;
use quote::quote;

use crate::expand::{try_cache_region, try_cached};

/// The expansion, as one string with spaces between tokens.
fn expanded(result: syn::Result<TokenStream>) -> String {
    let tokens = result.unwrap_or_else(|e| panic!("expected an expansion, got: {e}"));
    // The expansion is valid Rust: three items.
    let file: syn::File = syn::parse2(tokens.clone()).unwrap();
    assert_eq!(file.items.len(), 3);
    tokens.to_string()
}

/// Every error message, in order.
fn errors(result: syn::Result<TokenStream>) -> Vec<String> {
    match result {
        Ok(tokens) => panic!("expected errors, got: {tokens}"),
        Err(e) => e.into_iter().map(|e| e.to_string()).collect(),
    }
}

fn one_error(result: syn::Result<TokenStream>) -> String {
    let all = errors(result);
    assert_eq!(all.len(), 1, "{all:#?}");
    all.into_iter().next().unwrap()
}

fn region_error(item: TokenStream) -> String {
    one_error(try_cache_region(quote!("short_term"), item))
}

#[test]
fn cache_region_expands_to_site_inner_function_and_invalidate() {
    let out = expanded(try_cache_region(
        quote!("short_term"),
        quote! {
            /// Loads a user.
            pub(crate) fn load(user: u32, mut lang: &str) -> User { lang = "x"; User::new(user, lang) }
        },
    ));
    for piece in [
        "static __CARBOY_SITE_load : :: carboy :: cache :: memo :: Site = :: carboy :: cache :: \
         memo :: Site :: region (\"short_term\" , :: core :: concat ! (:: core :: module_path ! \
         () , \"::\" , \"load\"))",
        "# [doc = r\" Loads a user.\"] pub (crate) fn load (user : u32 , lang : & str) -> User",
        "fn __carboy_inner (user : u32 , mut lang : & str) -> User { lang = \"x\" ; User :: new \
         (user , lang) }",
        "let _ = :: carboy :: cache :: memo :: key :: < u32 > ; let _ = :: carboy :: cache :: \
         memo :: key :: < & str > ;",
        "let __carboy_key = :: carboy :: cache :: memo :: key (& (& user , & lang ,))",
        ":: carboy :: cache :: memo :: call (& __CARBOY_SITE_load , __carboy_key , move || \
         __carboy_inner (user , lang))",
        "pub (crate) fn load_invalidate (user : u32 , lang : & str) -> :: carboy :: Result < () >",
        ":: carboy :: cache :: memo :: invalidate (& __CARBOY_SITE_load , :: carboy :: cache :: \
         memo :: key (& (& user , & lang ,)))",
    ] {
        assert!(out.contains(piece), "missing\n  {piece}\nin\n  {out}");
    }
    // The doc comment stays on `load`, not on `_invalidate`.
    assert_eq!(out.matches("Loads a user.").count(), 1);
    assert!(out.contains("Removes the cached value of `load` for these arguments"));
}

#[test]
fn async_fn_expands_to_awaited_calls_of_the_feature_gated_runtime() {
    let out = expanded(try_cache_region(
        quote!("short_term"),
        quote! {
            /// Loads a user.
            pub async fn load(user: u32, lang: &str) -> User { fetch(user, lang).await }
        },
    ));
    for piece in [
        "static __CARBOY_SITE_load : :: carboy :: cache :: memo :: Site = :: carboy :: cache :: \
         memo :: Site :: region (\"short_term\" , :: core :: concat ! (:: core :: module_path ! \
         () , \"::\" , \"load\"))",
        "pub async fn load (user : u32 , lang : & str) -> User",
        "async fn __carboy_inner (user : u32 , lang : & str) -> User { fetch (user , lang) . \
         await }",
        "let __carboy_key = :: carboy :: cache :: memo :: key (& (& user , & lang ,))",
        ":: carboy :: cache :: memo :: async_requires_the_carboy_feature_async :: call (& \
         __CARBOY_SITE_load , __carboy_key , move || __carboy_inner (user , lang)) . await",
        "pub async fn load_invalidate (user : u32 , lang : & str) -> :: carboy :: Result < () >",
        ":: carboy :: cache :: memo :: async_requires_the_carboy_feature_async :: invalidate (& \
         __CARBOY_SITE_load , :: carboy :: cache :: memo :: key (& (& user , & lang ,))) . await",
    ] {
        assert!(out.contains(piece), "missing\n  {piece}\nin\n  {out}");
    }
    // `Result`s, named namespaces and no arguments, as for sync functions.
    let out = expanded(try_cached(
        quote!(namespace = "users"),
        quote!(
            async fn f() -> std::io::Result<u8> {
                Ok(1)
            }
        ),
    ));
    for piece in [
        "async fn __carboy_inner () -> std :: io :: Result < u8 > { Ok (1) }",
        ":: carboy :: cache :: memo :: key (& (:: core :: concat ! (:: core :: module_path ! () \
         , \"::\" , \"f\") , ()))",
        "async_requires_the_carboy_feature_async :: call_result (& __CARBOY_SITE_f , \
         __carboy_key , __carboy_inner) . await",
        "async fn f_invalidate () -> :: carboy :: Result < () >",
    ] {
        assert!(out.contains(piece), "missing\n  {piece}\nin\n  {out}");
    }
}

#[test]
fn result_return_types_use_call_result() {
    for ty in [
        quote!(Result<u32, E>),
        quote!(std::io::Result<u32>),
        quote!(::carboy::Result<u32>),
    ] {
        let out = expanded(try_cache_region(
            quote!("r"),
            quote!(fn f(x: u32) -> #ty { make(x) }),
        ));
        assert!(
            out.contains("memo :: call_result (& __CARBOY_SITE_f"),
            "{out}"
        );
    }
    for ty in [
        quote!(Option<u32>),
        quote!(ResultSet),
        quote!(Vec<Result<u32, E>>),
    ] {
        let out = expanded(try_cache_region(
            quote!("r"),
            quote!(fn f(x: u32) -> #ty { make(x) }),
        ));
        assert!(out.contains("memo :: call (& __CARBOY_SITE_f"), "{out}");
    }
}

#[test]
fn cached_arguments_become_the_site() {
    let f = quote!(
        fn load(id: u32) -> String {
            id.to_string()
        }
    );
    let out = expanded(try_cached(quote!(), f.clone()));
    assert!(
        out.contains(
            "Site :: namespace (\"\" , :: core :: option :: Option :: None , :: core :: concat !"
        ),
        "{out}"
    );
    // Its own namespace: the arguments alone are the key.
    assert!(out.contains("memo :: key (& (& id ,))"), "{out}");

    let out = expanded(try_cached(
        quote!(namespace = "users", expire = 60),
        f.clone(),
    ));
    assert!(
        out.contains("Site :: namespace (\"users\" , :: core :: option :: Option :: Some (60u64)"),
        "{out}"
    );
    // A shared namespace: the function's path leads the key.
    assert!(
        out.contains(
            "memo :: key (& (:: core :: concat ! (:: core :: module_path ! () , \"::\" , \
             \"load\") , (& id ,)))"
        ),
        "{out}"
    );

    let out = expanded(try_cached(quote!(expire = 3_600u64,), f));
    assert!(out.contains("Option :: Some (3600u64)"), "{out}");
}

#[test]
fn zero_arguments_lifetimes_and_raw_names() {
    let out = expanded(try_cached(
        quote!(),
        quote!(
            fn r#type() -> u8 {
                1
            }
        ),
    ));
    assert!(out.contains("static __CARBOY_SITE_type"), "{out}");
    assert!(out.contains("fn type_invalidate ()"), "{out}");
    assert!(out.contains("\"::\" , \"type\")"), "{out}");
    assert!(out.contains("memo :: key (& ())"), "{out}");
    assert!(out.contains("__carboy_key , __carboy_inner)"), "{out}");

    let out = expanded(try_cached(
        quote!(),
        quote!(
            fn f<'a>(x: &'a str) -> String
            where
                'a: 'a,
            {
                x.into()
            }
        ),
    ));
    assert!(
        out.contains("fn f < 'a > (x : & 'a str) -> String where 'a : 'a"),
        "{out}"
    );
    assert!(
        out.contains("fn f_invalidate < 'a > (x : & 'a str)"),
        "{out}"
    );
}

#[test]
fn cfg_and_lint_attributes_reach_every_item() {
    let out = expanded(try_cached(
        quote!(),
        quote! {
            #[cfg(feature = "x")]
            #[expect(clippy::too_many_arguments)]
            #[inline]
            fn f(x: u32) -> u32 { x }
        },
    ));
    assert_eq!(out.matches("# [cfg (feature = \"x\")]").count(), 3, "{out}");
    assert_eq!(
        out.matches("# [allow (clippy :: too_many_arguments)]")
            .count(),
        2,
        "{out}"
    );
    assert_eq!(
        out.matches("# [expect (clippy :: too_many_arguments)]")
            .count(),
        1,
        "{out}"
    );
    assert_eq!(out.matches("# [inline]").count(), 1, "{out}");
}

#[test]
fn region_argument_is_checked() {
    let f = quote!(
        fn f() -> u8 {
            1
        }
    );
    let usage = "#[cache_region] takes the region's name as a string literal: \
                 #[cache_region(\"short_term\")]";
    assert_eq!(one_error(try_cache_region(quote!(), f.clone())), usage);
    assert_eq!(
        one_error(try_cache_region(quote!(short_term), f.clone())),
        usage
    );
    assert_eq!(one_error(try_cache_region(quote!(42), f.clone())), usage);
    assert_eq!(
        one_error(try_cache_region(quote!("a", "b"), f.clone())),
        "#[cache_region] takes one argument, the region's name"
    );
    for bad in [quote!(""), quote!("a.b")] {
        assert_eq!(
            one_error(try_cache_region(bad, f.clone())),
            "region names are non-empty and contain no '.' (a `CacheManager` refuses them)"
        );
    }
    assert!(try_cache_region(quote!("short_term",), f).is_ok());
}

#[test]
fn cached_arguments_are_checked() {
    let f = quote!(
        fn f() -> u8 {
            1
        }
    );
    let cases = [
        (
            quote!(namespac = "users"),
            "unknown argument `namespac`: #[cached] takes `namespace = \"...\"` and `expire = \
             <seconds>`, both optional",
        ),
        (
            quote!("users"),
            "#[cached] takes named arguments: #[cached(namespace = \"users\", expire = 60)]",
        ),
        (
            quote!(namespace = USERS),
            "`namespace` must be a string literal: namespace = \"users\"",
        ),
        (
            quote!(namespace = ""),
            "the namespace is empty; leave `namespace` out to use the function's path",
        ),
        (
            quote!(namespace = "carboy:region:x"),
            "namespaces starting with \"carboy:\" are carboy's own (region markers)",
        ),
        (
            quote!(namespace = "a", namespace = "b"),
            "`namespace` is given twice",
        ),
        (quote!(expire = 1, expire = 2), "`expire` is given twice"),
        (
            quote!(expire = -5),
            "`expire` cannot be negative: it is how many seconds values stay fresh",
        ),
        (
            quote!(expire = 1.5),
            "`expire` is a whole number of seconds: expire = 60",
        ),
        (
            quote!(expire = "60"),
            "`expire` is a number of seconds, not a string: expire = 60",
        ),
        (
            quote!(expire = MINUTE),
            "`expire` must be an integer literal, in seconds: expire = 60",
        ),
        (
            quote!(expire = 60 * 5),
            "`expire` must be an integer literal, in seconds: expire = 60",
        ),
        (
            quote!(expire = 60i32),
            "`expire` is a number of seconds without a unit: expire = 60",
        ),
        (
            quote!(expire = 99999999999999999999),
            "`expire` does not fit in a u64 number of seconds",
        ),
        (
            quote!(expire = 0),
            "`expire = 0` would make every value stale as soon as it is stored; leave `expire` \
             out to use the manager's expiry",
        ),
    ];
    for (attr, message) in cases {
        let text = attr.to_string();
        assert_eq!(
            one_error(try_cached(attr, f.clone())),
            message,
            "for ({text})"
        );
    }
}

#[test]
fn only_free_functions_with_a_body() {
    assert_eq!(
        region_error(quote!(
            struct User;
        )),
        "#[cache_region] applies to free functions (`fn name(args) -> T { … }`)"
    );
    assert_eq!(
        one_error(try_cached(
            quote!(),
            quote!(
                const N: u8 = 1;
            )
        )),
        "#[cached] applies to free functions (`fn name(args) -> T { … }`)"
    );
    // A declaration without a body (a trait's method).
    assert!(
        !errors(try_cached(
            quote!(),
            quote!(
                fn f(x: u32) -> u32;
            )
        ))
        .is_empty()
    );
}

#[test]
fn unsupported_signatures_are_rejected_with_the_reason() {
    let plain = "the memo runtime calls a plain function or `async fn`";
    let cases = [
        (
            quote!(
                const fn f() -> u8 {
                    1
                }
            ),
            format!("#[cache_region] cannot make a `const fn`: {plain}"),
        ),
        (
            quote!(
                unsafe fn f() -> u8 {
                    1
                }
            ),
            format!("#[cache_region] does not support `unsafe fn`: {plain}"),
        ),
        (
            quote!(
                extern "C" fn f() -> u8 {
                    1
                }
            ),
            format!("#[cache_region] does not support `extern` functions: {plain}"),
        ),
        (
            quote!(
                fn f<T: Serialize>(x: T) -> u8 {
                    1
                }
            ),
            "#[cache_region] does not support generic type or const parameters: the function's \
             values share one namespace keyed by its arguments, which would mix the instances; \
             write one non-generic function per type"
                .to_string(),
        ),
        (
            quote!(
                fn f<const N: usize>() -> u8 {
                    1
                }
            ),
            "#[cache_region] does not support generic type or const parameters: the function's \
             values share one namespace keyed by its arguments, which would mix the instances; \
             write one non-generic function per type"
                .to_string(),
        ),
        (
            quote!(
                fn f(x: impl Serialize) -> u8 {
                    1
                }
            ),
            "#[cache_region] does not support `impl Trait` arguments: they are generic \
             parameters (see generics); name the type"
                .to_string(),
        ),
        (
            quote!(
                fn f(x: Vec<impl Serialize>) -> u8 {
                    1
                }
            ),
            "#[cache_region] does not support `impl Trait` arguments: they are generic \
             parameters (see generics); name the type"
                .to_string(),
        ),
        (
            quote!(
                fn f() -> impl Serialize {
                    1
                }
            ),
            "#[cache_region] needs a named return type, not `impl Trait`: cached values are \
             deserialized into it"
                .to_string(),
        ),
        (
            quote!(
                fn f(v: &mut Vec<u8>) -> u8 {
                    1
                }
            ),
            "#[cache_region] does not support `&mut` arguments: a cache hit skips the body, so \
             its changes to the argument would not happen"
                .to_string(),
        ),
        (
            quote!(
                fn f(v: Option<&'static mut u8>) -> u8 {
                    1
                }
            ),
            "#[cache_region] does not support `&mut` arguments: a cache hit skips the body, so \
             its changes to the argument would not happen"
                .to_string(),
        ),
        (
            quote!(
                fn f((a, b): (u8, u8)) -> u8 {
                    a
                }
            ),
            "#[cache_region] needs each argument to be a plain name (`name: Type`, or `mut \
             name: Type`) to build the key from; destructure it in the body"
                .to_string(),
        ),
        (
            quote!(
                fn f(_: u8) -> u8 {
                    1
                }
            ),
            "#[cache_region] needs each argument to be a plain name (`name: Type`, or `mut \
             name: Type`) to build the key from; destructure it in the body"
                .to_string(),
        ),
        (
            quote!(
                fn f(&self) -> u8 {
                    1
                }
            ),
            "#[cache_region] does not support methods: `self` would not be part of the cache \
             key, and the expansion's `static` cannot go in an `impl` block. Move the cached \
             work into a free function taking what it needs"
                .to_string(),
        ),
        (
            quote!(
                fn new(id: u32) -> Self {
                    Self { id }
                }
            ),
            "#[cache_region] applies to free functions; a signature with `Self` is in an `impl` \
             block, where the expansion's `static` cannot go. Move the cached work into a free \
             function"
                .to_string(),
        ),
    ];
    for (item, message) in cases {
        let text = item.to_string();
        assert_eq!(region_error(item), message, "for {text}");
    }
    // A raw pointer is not a `&mut` (it is not `Serialize` either, which
    // rustc reports).
    assert!(
        try_cache_region(
            quote!("r"),
            quote!(
                fn f(p: *mut u8) -> u8 {
                    1
                }
            )
        )
        .is_ok()
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let all = errors(try_cached(
        quote!(expire = 0),
        quote!(
            const fn f<T>(&self, (a, b): (u8, u8), c: &mut T) -> impl Sized {
                1
            }
        ),
    ));
    // expire, const, the generic parameter, the `impl` return type, the
    // receiver, the pattern, the `&mut` argument.
    assert_eq!(all.len(), 7, "{all:#?}");
    assert!(all[0].starts_with("`expire = 0`"), "{all:#?}");
}
