# creek: PGXS build. C++17, linked against nats.c and avro-c.
EXTENSION  = creek
MODULE_big = creek
DATA       = $(wildcard creek--*.sql)
PGFILEDESC = "creek - stream committed row changes to NATS JetStream as Avro"

SRCS = src/module.cpp src/settings.cpp src/shmem.cpp src/stat_views.cpp \
       src/launcher.cpp src/worker.cpp src/slot.cpp src/slot_recovery.cpp src/decoder.cpp src/partition_ddl.cpp \
       src/encoder.cpp src/schema.cpp src/table_info.cpp src/names.cpp src/type_map.cpp src/sql_api.cpp \
       src/publisher.cpp src/publisher_conn.cpp src/js_answer.cpp src/nats_msg.cpp src/spool.cpp src/fingerprint.cpp src/subjects.cpp src/json_text.cpp \
       src/nats_config.cpp src/snapshot_queue.cpp src/snapshot_worker.cpp src/snapshot_sql.cpp src/snapshot_requests.cpp src/owner_spi.cpp
OBJS = $(SRCS:.cpp=.o)

REGRESS      = add_remove errors stat_view settings partitions
REGRESS_OPTS = --load-extension=creek

PG_CONFIG ?= pg_config
PG_CXXFLAGS = -std=c++17 -Wno-register -fno-omit-frame-pointer -Wall -Wno-missing-field-initializers
PG_CPPFLAGS = -Isrc -DCREEK_PG -MMD -MP
SHLIB_LINK  = -lnats -lavro -lstdc++ -lpthread

# Debian's PGXS would also compile C++ to LLVM bitcode with clang, without our
# flags; creek has no use for JIT inlining of its code.
override with_llvm := no

PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# PGXS does not track header dependencies: the compiler writes them (-MMD).
-include $(wildcard src/*.d)
EXTRA_CLEAN = src/*.d
