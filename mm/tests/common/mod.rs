//! Shared by the host integration tests of `mm`.

/// `matrix!(test_a, test_b);` → for each configuration of the build matrix a module with one
/// `#[test]` per generic `fn test_x<C: Config>()`.
#[macro_export]
macro_rules! matrix {
    ($($test:ident),* $(,)?) => {
        $crate::matrix!(@cfg cfg_4k_39, Cfg4K39; $($test),*);
        $crate::matrix!(@cfg cfg_4k_48, Cfg4K48; $($test),*);
        $crate::matrix!(@cfg cfg_16k_36, Cfg16K36; $($test),*);
        $crate::matrix!(@cfg cfg_16k_47, Cfg16K47; $($test),*);
        $crate::matrix!(@cfg cfg_16k_48, Cfg16K48; $($test),*);
        $crate::matrix!(@cfg cfg_64k_42, Cfg64K42; $($test),*);
        $crate::matrix!(@cfg cfg_64k_48, Cfg64K48; $($test),*);
    };
    (@cfg $m:ident, $cfg:ident; $($test:ident),*) => {
        mod $m {
            $( #[test] fn $test() { super::$test::<mm::geometry::$cfg>(); } )*
        }
    };
}

/// `matrix_modes!(test_a, ...);` → [`matrix!`] as is (eager memmap init), and again in
/// `<cfg>_deferred` modules, each test wrapped in the test file's `with_deferred`.
#[macro_export]
macro_rules! matrix_modes {
    ($($test:ident),* $(,)?) => {
        $crate::matrix!($($test),*);
        $crate::matrix_modes!(@cfg cfg_4k_39_deferred, Cfg4K39; $($test),*);
        $crate::matrix_modes!(@cfg cfg_4k_48_deferred, Cfg4K48; $($test),*);
        $crate::matrix_modes!(@cfg cfg_16k_36_deferred, Cfg16K36; $($test),*);
        $crate::matrix_modes!(@cfg cfg_16k_47_deferred, Cfg16K47; $($test),*);
        $crate::matrix_modes!(@cfg cfg_16k_48_deferred, Cfg16K48; $($test),*);
        $crate::matrix_modes!(@cfg cfg_64k_42_deferred, Cfg64K42; $($test),*);
        $crate::matrix_modes!(@cfg cfg_64k_48_deferred, Cfg64K48; $($test),*);
    };
    (@cfg $m:ident, $cfg:ident; $($test:ident),*) => {
        mod $m {
            $( #[test] fn $test() { super::with_deferred(super::$test::<mm::geometry::$cfg>); } )*
        }
    };
}
