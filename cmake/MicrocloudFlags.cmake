# Compiler flags shared by every target of the project.
#
# -ffp-contract=off: a fused multiply-add rounds once where a*b+c rounds twice,
# so letting the compiler contract would make simulation results depend on the
# compiler and the CPU. -ffast-math is never used for the same reason.
set(MC_WARNINGS -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes
  -Wmissing-prototypes -Wformat=2 -Wvla -Wno-unused-parameter
  # snprintf into bounded buffers truncates on purpose; we check where it
  # matters. (gcc only: clang has no such warning.)
  $<$<C_COMPILER_ID:GNU>:-Wno-format-truncation>
  # Tables name only the fields they set; the rest is zero by the language.
  -Wno-missing-field-initializers)
add_compile_options(-ffp-contract=off -fno-fast-math)
add_compile_definitions(_GNU_SOURCE)

set(CMAKE_C_FLAGS_DEBUG "-O0 -g3")
set(CMAKE_C_FLAGS_RELEASE "-O2 -g -DNDEBUG")
# The asan configuration: AddressSanitizer + UndefinedBehaviorSanitizer, and
# any UB report aborts so a test cannot pass over it.
set(CMAKE_C_FLAGS_ASAN
  "-O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer")
set(CMAKE_EXE_LINKER_FLAGS_ASAN "-fsanitize=address,undefined")
set(CMAKE_SHARED_LINKER_FLAGS_ASAN "-fsanitize=address,undefined")

# mc_target_warnings(target): our own code builds with warnings as errors.
function(mc_target_warnings target)
  target_compile_options(${target} PRIVATE ${MC_WARNINGS})
endfunction()

# The fuzz build (clang): everything is instrumented for libFuzzer's coverage
# and sanitized; only the fuzz targets become tests there.
if(MC_FUZZ)
  add_compile_options(-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all
                      -fno-omit-frame-pointer -g)
  add_link_options(-fsanitize=address,undefined)
endif()
