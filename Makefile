# anybit: the two commands of the README are `make demo` and `make test`.
BUILD ?= build
JOBS ?= 2

.PHONY: deps configure build test demo bench clean

deps:
	@bash scripts/install-deps.sh

$(BUILD)/CMakeCache.txt:
	@$(MAKE) --no-print-directory deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release

configure: deps $(BUILD)/CMakeCache.txt

build: configure
	cmake --build $(BUILD) -j$(JOBS)

test: build
	cd $(BUILD) && ctest --output-on-failure -j$(JOBS)

demo: build
	rm -rf $(BUILD)/demo && $(BUILD)/anybit demo -o $(BUILD)/demo

bench: build
	bash bench/run_all.sh

clean:
	rm -rf $(BUILD)
